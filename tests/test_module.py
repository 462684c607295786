"""The workflow used as a module of another workflow (Snakemake's `module` + `use rule`)."""

import subprocess
import sys

import pytest

from quantinit.workflow_tools import planned_jobs

from conftest import REPO
from workflow_helpers import write_config

pytestmark = pytest.mark.slow

HOST = """
configfile: "tiny.yaml"


module quantinit:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from quantinit as quantinit_*
"""


def test_another_workflow_runs_this_one_as_a_module(tmp_path):
    """Paths inside the workflow (library, scripts, the paper's table) are found from the
    module's files, not from the host workflow's folder."""
    write_config(tmp_path)
    (tmp_path / "Snakefile").write_text(HOST.format(snakefile=REPO / "workflow" / "Snakefile"))

    def snakemake(*args):
        return subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", "2", *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    planned = snakemake("-n", "quantinit_all")  # the paper's Table 2 is the module's own
    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
    jobs = planned_jobs(planned.stdout)
    assert jobs["quantinit_train"] == 4 and jobs["quantinit_table2"] == 1, jobs
    # a real job: the rule's script imports the library from the module's repository
    ran = snakemake("results/data/dataset.npz")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert (tmp_path / "results/data/dataset.json").is_file()
