"""The README's Snakemake commands work as written, each against its own config."""

import re
import subprocess
import sys

import pytest
import yaml

from quantinit.workflow_tools import planned_jobs

from conftest import REPO

# What a placeholder in a README command stands for in this test.
PLACEHOLDERS = {
    "<arch>": "DWS_Conv_With_BN", "<init>": "HeUni", "<s>": "0", "<E>": "4", "<scheme>": "quint8"
}  # fmt: skip


def readme_commands():
    """Every snakemake command in the README (code blocks and inline code) with a target
    under a results folder, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    lines += re.findall(r"`([^`\n]*snakemake [^`\n]*)`", text)
    commands = []
    for line in lines:
        command = line.split("#")[0].strip()
        if "snakemake " in command and "results/" in command and "--report" not in command:
            commands.append(command)
    return commands


def results_dir(command):
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    configfile = re.search(r"--configfile (\S+)", command)
    if configfile:
        config.update(yaml.safe_load((REPO / configfile.group(1)).read_text()))
    return config["results_dir"]


def test_the_readme_has_the_commands_checked_here():
    commands = readme_commands()
    assert any("--configfile config/quick.yaml" in c and "--forcerun" in c for c in commands)
    assert any("results/quick/DWS_Conv_With_BN" in c for c in commands)
    assert any("--configfile" not in c for c in commands)


def test_quick_and_full_study_have_their_own_results():
    assert results_dir("--configfile config/quick.yaml") != results_dir("")


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_targets_its_configs_results(command, tmp_path):
    """The command as written (placeholders filled) names its own config's results and
    a dry run of it, in an empty folder, plans the work."""
    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value)
    args = command.split()
    args = args[args.index(next(a for a in args if a.endswith("snakemake"))) + 1 :]
    targets = [a for a in args if a.startswith("results/")]
    own = results_dir(command)
    others = {results_dir(""), results_dir("--configfile config/quick.yaml")} - {own}
    for target in targets:
        assert target.startswith(f"{own}/"), target
        assert not any(target.startswith(f"{other}/") for other in others if other != "results")
    (tmp_path / "config").symlink_to(REPO / "config")  # the config as a clone has it
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args, "-n", "--snakefile", str(REPO / "Snakefile")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = planned_jobs(result.stdout)
    assert jobs.get("prepare_data") == 1, jobs
    if "--forcerun" not in args:  # a cell as the target: that cell alone
        assert jobs.get("train") == 1, jobs
