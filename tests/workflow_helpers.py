"""Run the real workflow on a tiny synthetic study in a temporary folder."""

import subprocess
import sys

import yaml

from quantinit.workflow_tools import deep_update

from conftest import REPO

# the tiny synthetic study (.test/config/config.yaml, as the Snakemake catalog keeps it)
TINY = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())


def write_config(workdir, name="tiny.yaml", **overrides):
    config = deep_update(TINY, overrides)
    path = workdir / name
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake_command(workdir, *args, cores=2, config="tiny.yaml", snakefile=REPO / "Snakefile"):
    return [
        sys.executable, "-m", "snakemake", "--snakefile", str(snakefile),
        "--directory", str(workdir), "--configfile", str(workdir / config),
        "--cores", str(cores), *args,
    ]  # fmt: skip


def snakemake(workdir, *args, cores=2, timeout=900, **command):
    return subprocess.run(
        snakemake_command(workdir, *args, cores=cores, **command),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
