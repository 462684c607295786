"""Code hashes that make Snakemake rerun what a library change affects; output provenance."""

import hashlib
import json
import subprocess

import pandas as pd
import pyarrow.parquet as pq
import pytest

from quantinit.io import PROVENANCE_KEY, read_provenance, write_json, write_parquet
from quantinit.provenance import (
    code_hash,
    code_hashes,
    library_sha256,
    module_closure,
    provenance,
)

from conftest import REPO

SCRIPTS = REPO / "workflow" / "scripts"


@pytest.fixture
def package(tmp_path):
    """A package `quantinit` with a chain of imports (one lazy) and an unreachable module."""
    package_dir = tmp_path / "quantinit"
    package_dir.mkdir()
    (package_dir / "__init__.py").write_text('"""Package."""\n')
    (package_dir / "first.py").write_text(
        '"""First."""\n\n\ndef f():\n    from quantinit.second import g\n\n    return g()\n'
    )
    (package_dir / "second.py").write_text(
        "from quantinit import third\n\n\ndef g():\n    return third.VALUE\n"
    )
    (package_dir / "third.py").write_text("VALUE = 1\n")
    (package_dir / "unused.py").write_text("VALUE = 2\n")
    script = tmp_path / "script.py"
    script.write_text("import numpy\n\nfrom quantinit.first import f\n\nprint(f())\n")
    return script, package_dir


def test_closure_follows_imports_lazy_ones_too(package):
    script, package_dir = package
    assert module_closure(script, package_dir) == ["first", "second", "third"]


def test_code_hash_changes_with_reachable_code_only(package):
    script, package_dir = package
    before = code_hash(script, package_dir)
    (package_dir / "unused.py").write_text("VALUE = 3\n")
    assert code_hash(script, package_dir) == before
    # docstrings and comments are not what the code does
    (package_dir / "first.py").write_text(
        '"""First, reworded."""\n\n\ndef f():\n    """Call g."""\n    # lazily\n'
        "    from quantinit.second import g\n\n    return g()\n"
    )
    assert code_hash(script, package_dir) == before
    (package_dir / "third.py").write_text("VALUE = 10\n")  # two imports away
    assert code_hash(script, package_dir) != before


def test_hashing_scripts_together_equals_one_by_one():
    scripts = sorted(SCRIPTS.glob("*.py"))
    together = code_hashes(scripts)
    assert together == {script: code_hash(script) for script in scripts}
    assert len(set(together.values())) == len(scripts)


def test_stages_reach_only_the_modules_they_run():
    closures = {path.stem: module_closure(path) for path in SCRIPTS.glob("*.py")}
    assert "sensitivity" in closures["quant_sensitivity"]
    assert [stage for stage, modules in closures.items() if "sensitivity" in modules] == [
        "quant_sensitivity"
    ]
    assert "training" in closures["train"] and "tflite" in closures["evaluate"]
    assert not {"tflite", "analysis", "training"} & set(closures["quantize"])
    assert not {"training", "models", "sensitivity"} & set(closures["layerwise"])


def test_library_hash_is_sha256_of_the_sources_in_name_order(package):
    _, package_dir = package
    expected = hashlib.sha256()
    for name in ("__init__.py", "first.py", "second.py", "third.py", "unused.py"):
        expected.update(name.encode() + b"\0" + (package_dir / name).read_bytes() + b"\0")
    assert library_sha256(package_dir) == expected.hexdigest()
    (package_dir / "unused.py").write_text("# a comment counts here\nVALUE = 2\n")
    assert library_sha256(package_dir) != expected.hexdigest()


def test_outputs_record_the_code_that_wrote_them(tmp_path):
    write_parquet(pd.DataFrame({"a": [1, 2]}), tmp_path / "t.parquet")
    write_json({"status": "ok"}, tmp_path / "s.json")
    for name in ("t.parquet", "s.json"):
        assert read_provenance(tmp_path / name) == provenance()
    assert provenance()["library_sha256"] == library_sha256()
    # the table itself is unchanged: no index column, and pandas reads it as written
    stored = pq.read_table(tmp_path / "t.parquet")
    assert stored.column_names == ["a"] and PROVENANCE_KEY.encode() in stored.schema.metadata
    assert json.loads((tmp_path / "s.json").read_text())["status"] == "ok"


def test_provenance_names_the_git_commit():
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert provenance()["git_commit"] == head.stdout.strip()
    assert isinstance(provenance()["git_dirty"], bool)
