"""The software environments of --sdm conda (workflow/envs/): what they install, and that
the rules run in them."""

import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import tomllib
import yaml

from conftest import REPO
from workflow_helpers import snakemake_command, write_config

ENV_FILES = sorted((REPO / "workflow" / "envs").glob("*.yaml"))


def test_each_env_installs_this_package_with_an_extra_pyproject_defines():
    """Versions are pinned once, in pyproject.toml; an env file names the package and its
    extra, never a version of its own."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert [path.name for path in ENV_FILES] == ["analysis.yaml", "litert.yaml", "tensorflow.yaml"]
    for env_file in ENV_FILES:
        env = yaml.safe_load(env_file.read_text())
        pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
        assert len(pip_sections) == 1, env_file
        (line,) = pip_sections[0]
        match = re.fullmatch(r"-e \$\{QUANTINIT_SOURCE\}(?:\[(\w+)\])?", line)
        assert match, f"{env_file.name}: {line!r}"
        assert match.group(1) is None or match.group(1) in extras, line


def test_envs_folder_is_the_workflow_s():
    assert (REPO / "envs").resolve() == (REPO / "workflow" / "envs").resolve()


def test_every_rule_names_an_existing_conda_env():
    named = set()
    for rule_file in (REPO / "workflow" / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n(?:\s*#.*\n)*\s*"([^"]+)"', rule_file.read_text()):
            assert (rule_file.parent / env).resolve().is_file(), f"{rule_file.name}: {env}"
            named.add((rule_file.parent / env).resolve())
    assert named == {path.resolve() for path in ENV_FILES}


@pytest.mark.slow
def test_conda_envs_install_the_package_and_run_the_rules(tmp_path):
    """`--sdm conda` with the env files as they are: Snakemake builds each env (conda's part,
    python and pip, stood in for by a venv of this machine's Python: tests/conda_stand_in.py),
    its pip section installs quantinit, and every job of one cell runs in its env with
    PYTHONPATH cleared (as Snakemake clears it), so the package comes from the env."""
    root = tmp_path / "conda"
    (root / "bin").mkdir(parents=True)
    conda = root / "bin" / "conda"
    conda.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" "{REPO / "tests" / "conda_stand_in.py"}" '
        f'"{root}" "{sys._base_executable}" "$@"\n'
    )
    conda.chmod(0o755)
    (root / "bin" / "activate").write_text('. "$1/bin/activate"\n')
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_config(workdir, architectures=["DWS_Conv_With_BN"])
    cell = "results/DWS_Conv_With_BN/HeUni/seed0/epoch1/q/quint8"
    env = {**os.environ, "PATH": f"{root / 'bin'}:{os.environ['PATH']}"}
    env["PYTHONPATH"] = str(tmp_path / "nowhere")  # the job must not need it
    ran = subprocess.run(
        snakemake_command(workdir, f"{cell}/layerwise.parquet", f"{cell}/metrics.parquet",
                          "--sdm", "conda"),
        capture_output=True, text=True, timeout=1800, env=env,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-4000:]
    envs = sorted((workdir / ".snakemake" / "conda").glob("*/bin/python"))
    assert len(envs) == 3, envs  # analysis, litert and tensorflow
    for python in envs:
        where = subprocess.run(
            [str(python), "-c", "import quantinit; print(quantinit.__file__)"],
            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path,
        )  # fmt: skip
        assert where.stdout.strip() == str(REPO / "src" / "quantinit" / "__init__.py")

    def has(python, module):
        return subprocess.run([str(python), "-c", f"import {module}"]).returncode == 0

    # (TensorFlow, LiteRT) of each env: the numpy one, the LiteRT one, the TensorFlow one
    has_modules = [(has(p, "tensorflow"), has(p, "ai_edge_litert")) for p in envs]
    assert sorted(has_modules) == [(False, False), (False, True), (True, True)]
    metrics = pd.read_parquet(workdir / cell / "metrics.parquet")
    assert 0 <= metrics["fp32_accuracy"].iloc[0] <= 100  # percent
