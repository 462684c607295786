"""Config validation: bad configs stop the run before any job, naming the key."""

import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from workflow_helpers import planned_jobs

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def dry_run(tmp_path, config_overrides=None, extra=()):
    """snakemake -n with config/config.yaml plus `config_overrides` (a dict, as YAML)."""
    args = [*SNAKEMAKE, "-n", "--cores", "8", "--directory", str(tmp_path)]
    args += ["--snakefile", str(REPO / "Snakefile")]
    if config_overrides is not None:
        override = tmp_path / "override.yaml"
        override.write_text(yaml.safe_dump(config_overrides))
        args += ["--configfile", str(REPO / "config" / "config.yaml"), str(override)]
    else:
        args += ["--configfile", str(REPO / "config" / "config.yaml")]
    return subprocess.run([*args, *extra], capture_output=True, text=True, timeout=120)


def test_default_config_is_the_48_cell_study(tmp_path):
    result = dry_run(tmp_path)
    assert result.returncode == 0, result.stderr
    counts = planned_jobs(result.stdout)
    assert counts["train"] == 48
    assert counts["export_checkpoint"] == 48
    assert counts["prepare_data"] == 1


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"trainig": {"epochs": 3}}, ["trainig", "Additional properties"]),
        ({"training": {"epochz": 3}}, ["epochz"]),
        ({"training": {"epochs": "many"}}, ["many", "integer", "epochs"]),
        ({"architectures": ["ResNet50"]}, ["ResNet50", "Regular_Conv_With_BN", "DWS_Conv_No_BN"]),
        ({"initializers": ["HeNormal"]}, ["HeNormal", "HeNorm", "RandUni_Large"]),
        ({"data": {"source": "imagenet"}}, ["imagenet", "image_folder", "synthetic"]),
        ({"initializer_settings": {"RandUni_Large": {"limt": 1}}}, ["limt"]),
        ({"calibration": {"percentile": 60}}, ["60", "percentile"]),
        ({"training": {"precision": "float16"}}, ["float16", "mixed_float16", "mixed_bfloat16"]),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, override, expected):
    result = dry_run(tmp_path, override)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"
    assert "Job stats" not in message and "job count" not in message.lower()
    assert not (tmp_path / "results").exists()


def test_analyze_epochs_after_the_last_epoch_is_an_error(tmp_path):
    result = dry_run(tmp_path, {"training": {"epochs": 5, "analyze_epochs": [3, 7]}})
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "analyze_epochs" in message and "training.epochs = 5" in message


def test_xla_with_op_determinism_is_an_error(tmp_path):
    result = dry_run(tmp_path, {"training": {"jit_compile": True}})
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "training.jit_compile: true needs training.deterministic: false" in message
    assert (
        dry_run(tmp_path, {"training": {"jit_compile": True, "deterministic": False}}).returncode
        == 0
    )


def job_resources(stdout: str) -> dict[str, set[str]]:
    """rule name -> the distinct `resources:` lines of its planned jobs in a dry run."""
    resources, rule = {}, None
    for line in stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            resources.setdefault(rule, set()).add(line.strip())
    return resources


def test_gpu_resources_reach_the_jobs(tmp_path):
    """Train jobs carry resources.train.gpu, TensorFlow analysis jobs resources.analysis.gpu:
    what --resources gpu=N caps locally and what the SLURM profile turns into --gpus."""
    override = {"resources": {"train": {"gpu": 1}, "analysis": {"gpu": 0}}}
    result = dry_run(tmp_path, override)
    resources = job_resources(result.stdout + result.stderr)
    assert all("gpu=1" in line for line in resources["train"])
    for rule in ("fold_bn", "calibrate", "quantize", "evaluate", "quant_sensitivity"):
        assert all("gpu=0" in line for line in resources[rule]), rule
    assert not any("gpu" in line for line in resources["layerwise"])


def test_defaults_fill_omitted_keys(tmp_path):
    """A config with only a few keys gets the schema's defaults (Table 1 settings too)."""
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text(yaml.safe_dump({"architectures": ["DWS_Conv_With_BN"], "seeds": [0, 1]}))
    args = [*SNAKEMAKE, "-n", "--cores", "1", "--directory", str(tmp_path)]
    args += ["--snakefile", str(REPO / "Snakefile"), "--configfile", str(minimal)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # 12 initializers x 2 seeds, plus Figure 2's default cell (DWS_Conv_No_BN_GlorotUni),
    # which is drawn even though it is outside this study, for both seeds
    assert planned_jobs(result.stdout)["train"] == 12 * 2 + 2
