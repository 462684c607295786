"""Config overlays and dry-run job tables, as the tests and the benchmark use them."""

from quantinit.workflow_tools import deep_update, planned_jobs


def test_deep_update_merges_mappings_and_replaces_the_rest():
    base = {"data": {"source": "keras", "test_samples": None}, "seeds": [0], "x": 1}
    merged = deep_update(base, {"data": {"test_samples": 500}, "seeds": [1, 2]})
    assert merged == {"data": {"source": "keras", "test_samples": 500}, "seeds": [1, 2], "x": 1}
    assert base["data"]["test_samples"] is None  # the base is not changed


def test_planned_jobs_reads_the_job_table_of_a_dry_run():
    stdout = """Building DAG of jobs...
Job stats:
job            count
-----------  -------
all                1
train             48
total             49

Reasons:
    train: 3
"""
    assert planned_jobs(stdout) == {"all": 1, "train": 48}
    assert planned_jobs("Nothing to be done.") == {}
