"""What a workflow run prints: a failing job's error on the console, no per-job noise."""

import re

import pytest

from quantinit.data import DataError, load_source

from workflow_helpers import snakemake, write_config

pytestmark = pytest.mark.slow

CELL = "results/DWS_Conv_With_BN/HeUni/seed0"
# TensorFlow's C++ start-up lines (the first two from TensorFlow 2.21 on a CPU, the others
# from GPU builds)
TF_STARTUP = re.compile(
    r"oneDNN custom operations|absl::InitializeLog|cpu_feature_guard|This TensorFlow binary"
    r"|Unable to register cu|cuda drivers|TF-TRT Warning"
)


def test_a_failing_job_shows_its_error_on_the_console(tmp_path):
    missing = tmp_path / "missing"
    data = {"source": "image_folder", "image_folder": str(missing)}
    with pytest.raises(DataError) as error:
        load_source(data)  # the message prepare_data's log gets
    write_config(tmp_path, data=data)
    result = snakemake(tmp_path, timeout=300)
    assert result.returncode != 0
    assert str(error.value) in result.stdout + result.stderr


def test_dry_run_prints_no_shell_commands_and_no_overlong_lines(tmp_path):
    # 8 cells: rule all's line, when it listed every per-cell result, was 2,600 characters;
    # collect_study's own input line (every cell's tables) is 1,500 and grows with the study
    write_config(tmp_path, initializers=["HeUni", "HeNorm"])
    result = snakemake(tmp_path, "-n", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert "rule all:" in console and "Shell command" not in console
    assert max(map(len, console.splitlines())) <= 2000
    rule_all = console[console.index("rule all:") :].split("\n\n")[0]
    assert "/seed0/" not in rule_all  # only the study outputs, no per-cell file


def test_rule_logs_have_no_tensorflow_startup_lines(tmp_path, monkeypatch):
    # conftest.py sets TF_CPP_MIN_LOG_LEVEL for the tests; the jobs must not need it
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    write_config(tmp_path)
    result = snakemake(tmp_path, f"{CELL}/train/status.json", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (tmp_path / CELL / "train/train.log").read_text()
    assert log.strip()
    assert not TF_STARTUP.findall(log), log[:3000]
