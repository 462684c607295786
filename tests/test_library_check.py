"""Jobs refuse to run a library other than the workflow's own (provenance.check_library)."""

import shutil
import subprocess
import sys

import pytest

from quantinit.provenance import (
    PACKAGE_DIR,
    LibraryMismatch,
    check_installed_library,
    check_library,
)

from conftest import REPO
from workflow_helpers import snakemake, write_config


@pytest.fixture
def copy_of_library(tmp_path):
    copy = tmp_path / "checkout" / "src" / "quantinit"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_the_same_library_or_a_byte_identical_copy_passes(copy_of_library):
    check_library(PACKAGE_DIR)
    check_library(copy_of_library)  # e.g. a non-editable install of the same sources


def test_another_checkout_s_library_is_refused_with_what_to_do(copy_of_library):
    stats = copy_of_library / "stats.py"
    stats.write_text(stats.read_text() + "\nCHANGED = True\n")
    with pytest.raises(LibraryMismatch, match=r"differ\..*pip install -e .*checkout"):
        check_library(copy_of_library)


def test_an_interpreter_without_the_package_is_refused(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    with pytest.raises(LibraryMismatch, match="cannot import quantinit.*make setup"):
        check_installed_library(str(bare / "bin" / "python"), PACKAGE_DIR)
    check_installed_library(sys.executable, REPO / "src" / "quantinit")


@pytest.mark.slow
def test_a_workflow_whose_library_differs_from_the_installed_one_stops_before_any_job(
    copy_of_library, tmp_path
):
    """A second checkout run with this checkout's environment: Snakemake stops when the run
    starts, before any job (a dry run, which starts none, plans as usual)."""
    checkout = copy_of_library.parents[1]
    for part in ("Snakefile", "workflow", "config", "reference", ".test"):
        source = REPO / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, checkout / part)
    (copy_of_library / "stats.py").write_text(
        (copy_of_library / "stats.py").read_text() + "\nCHANGED = True\n"
    )
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_config(workdir)
    ran = snakemake(workdir, snakefile=checkout / "Snakefile")
    assert ran.returncode != 0
    output = ran.stdout + ran.stderr
    assert "the two differ" in output and str(copy_of_library) in output, output
    assert not (workdir / "results").exists()
    planned = snakemake(workdir, "-n", snakefile=checkout / "Snakefile")
    assert planned.returncode == 0 and "prepare_data" in planned.stdout
