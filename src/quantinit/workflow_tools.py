"""Driving the workflow from Python (the tests and the benchmark): config overlays merged as
Snakemake merges a second --configfile, and the job table of a dry run."""

from __future__ import annotations


def deep_update(base: dict, extra: dict) -> dict:
    """`base` with `extra` merged in: nested mappings key by key, anything else replaced."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


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
