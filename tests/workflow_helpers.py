"""Run the real workflow on a tiny synthetic study in a temporary folder."""

import subprocess
import sys

import yaml

from conftest import REPO

# the tiny synthetic study (.test/config/config.yaml, as the Snakemake catalog keeps it)
TINY = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())


def deep_update(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


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


def planned_jobs(dry_run_stdout: str) -> dict[str, int]:
    """The job-count table of a dry run ("job  count" ... "total  N"), as {rule: count}."""
    counts, in_table = {}, False
    for line in dry_run_stdout.splitlines():
        parts = line.split()
        if parts == ["job", "count"]:
            in_table = True
        elif in_table and parts and parts[0] == "total":
            break
        elif in_table and len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts
