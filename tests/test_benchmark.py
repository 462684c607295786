"""The benchmark script runs end to end in smoke mode and reports every group.

Only the shape of the report is checked: timings are machine-dependent and never asserted.
"""

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

GROUPS = {"training", "stages", "workflow", "evaluation", "memory"}
PER_CELL_STAGES = [
    "prepare_data",
    "train",
    "build_engine",
    "export_checkpoint",
    "fold_bn",
    "calibrate",
    "quantize",
    "evaluate",
    "layerwise",
    "quant_sensitivity",
]


def test_smoke_benchmark_reports_every_group(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]

    report = json.loads((tmp_path / "results.json").read_text())
    rows = pd.DataFrame(report["rows"])
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert len(table) == len(rows)
    assert list(table.name) == list(rows.name)
    for frame in (rows, table):
        assert {"group", "name", "value", "unit", "ratio", "target", "target_met"} <= set(
            frame.columns
        )
        assert GROUPS <= set(frame.group)
        assert all(math.isfinite(v) and v > 0 for v in frame.value), frame[frame.value <= 0]

    targets = rows[rows.target.notna()]
    assert len(targets) >= 4  # training ratio, analysis chain, dry run, no-op rerun
    assert all(isinstance(met, bool) for met in targets.target_met)
    assert set(targets.group) >= {"training", "stages", "workflow"}
    assert table[table.target.notna()].target_met.notna().all()

    stage_names = set(rows[rows.group == "stages"].name)
    for stage in PER_CELL_STAGES:
        assert {f"{stage}.wall", f"{stage}.startup", f"{stage}.work"} <= stage_names, stage

    assert {"analysis_chain.wall", "analysis_chain.wall_with_engine"} <= stage_names
    chain = rows.set_index("name").value
    assert chain["analysis_chain.wall_with_engine"] == pytest.approx(
        chain["analysis_chain.wall"] + chain["build_engine.wall"]
    )
    assert "noop_rerun_one_cell" in set(rows.name)
    assert "dry_run_144_cells" in set(rows.name)
    # smoke mode measures one GPU switch (XLA) against float32, so the switch path runs in CI
    xla = rows[rows.name.str.endswith(".train_cell.xla")]
    assert len(xla) == 1 and xla.ratio.notna().all()
