"""Stages that need no TensorFlow do not pay its 4-second import."""

import subprocess
import sys

import pytest

from conftest import REPO

NUMPY_ONLY = [
    "quantinit.data",
    "quantinit.io",
    "quantinit.tables",
    "quantinit.cellfiles",
    "quantinit.sampling",
    "quantinit.calibration",
    "quantinit.evaluation",
    "quantinit.training",
    "quantinit.folding",
    "quantinit.quantization",
    "quantinit.stats",
    "quantinit.models",
    "quantinit.initializers",
    "quantinit.analysis",
    "quantinit.tflite",
    "quantinit.sensitivity",
    "quantinit.engine",
    "quantinit.aggregate",
    "quantinit.figures",
    "quantinit.summary",
]


@pytest.mark.parametrize("module", NUMPY_ONLY)
def test_module_import_does_not_load_tensorflow(module):
    code = (
        f"import sys; import {module}; "
        "heavy = [m for m in ('tensorflow', 'keras', 'ai_edge_litert') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO / "src")},
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
