"""Table 2 and the paper comparison from metrics made here."""

import math

import numpy as np
import pandas as pd
import pytest

from quantinit.aggregate import (
    SPLIT_COLUMNS,
    comparison,
    comparison_markdown,
    most_sensitive_table,
    quantization_split,
    read_paper_table2,
    split_cell_name,
    table2,
    table2_markdown,
)

from conftest import REPO


def metric_row(arch, init, seed, status="ok", epoch=10, fp32=80.0, quint8=70.0, **extra):
    row = dict(
        arch=arch, init=init, seed=seed, epoch=epoch, status=status, fp32_accuracy=fp32,
        quint8_accuracy=quint8, qmse=0.01, qce=1.0,
        percent_accuracy_decrease=100 * (fp32 - quint8) / fp32, tflite_int8_accuracy=quint8 + 1,
        quint8_minus_fp32=quint8 - fp32,
    )  # fmt: skip
    for key in ("fp32_accuracy", "quint8_accuracy", "tflite_int8_accuracy", "quint8_minus_fp32"):
        row[f"{key}_lo"], row[f"{key}_hi"] = row[key] - 2.0, row[key] + 2.0  # "bootstrap"
    if status == "diverged":
        for key in list(row):
            if key.startswith(("fp32", "quint8", "qmse", "qce", "percent", "tflite")):
                row[key] = np.nan
    row.update(extra)
    return row


@pytest.fixture
def metrics():
    return pd.DataFrame(
        [
            metric_row("Regular_Conv_With_BN", "HeUni", 0, fp32=88.0, quint8=86.0),
            metric_row("Regular_Conv_With_BN", "HeUni", 1, fp32=86.0, quint8=85.0),
            metric_row("Regular_Conv_With_BN", "HeUni", 1, epoch=5, fp32=50.0),  # earlier epoch
            metric_row("DWS_Conv_With_BN", "RandUni_Large", 0, fp32=76.6, quint8=74.2),
            metric_row("DWS_Conv_With_BN", "GlorotNorm", 0, fp32=80.1, quint8=69.8),
            metric_row("Regular_Conv_No_BN", "RandNorm_Large", 0, status="diverged"),
            metric_row("DWS_Conv_No_BN", "GlorotUni", 0, "not_learning", fp32=10.0, quint8=10.0),
        ]
    )


def test_table2_means_stds_and_paper_order(metrics):
    table = table2(metrics)
    assert list(table.Network) == [
        "DWS_Conv_No_BN_GlorotUni",
        "DWS_Conv_With_BN_GlorotNorm",
        "DWS_Conv_With_BN_RandUni_Large",
        "Regular_Conv_No_BN_RandNorm_Large",
        "Regular_Conv_With_BN_HeUni",
    ]
    he = table.set_index("Network").loc["Regular_Conv_With_BN_HeUni"]
    assert he["FP32 Accuracy"] == 87.0  # the last epoch of each seed, not epoch 5
    assert he["FP32 Accuracy std"] == pytest.approx(np.std([88.0, 86.0], ddof=1))
    assert he["QUINT8 Accuracy"] == 85.5 and he["n"] == 2 and he["Status"] == "ok"
    assert he["Percent Accuracy Decrease"] == pytest.approx(np.mean([100 * 2 / 88, 100 * 1 / 86]))
    diverged = table.set_index("Network").loc["Regular_Conv_No_BN_RandNorm_Large"]
    assert diverged["Status"] == "diverged" and math.isnan(diverged["FP32 Accuracy"])
    assert diverged["n"] == 0


def test_table2_intervals_over_seeds_or_test_images(metrics):
    table = table2(metrics).set_index("Network")
    he = table.loc["Regular_Conv_With_BN_HeUni"]  # two seeds: 88 and 86
    # Student t, 1 degree of freedom, 97.5%: 12.7062 (a t table); sem = 1.414 / sqrt(2) = 1
    assert he["Interval"] == "t over seeds"
    assert (he["FP32 Accuracy lo"], he["FP32 Accuracy hi"]) == (
        pytest.approx(87.0 - 12.7062, abs=1e-3),
        pytest.approx(87.0 + 12.7062, abs=1e-3),
    )
    assert he["QUINT8 - FP32"] == -1.5  # (-2 + -1) / 2
    one = table.loc["DWS_Conv_With_BN_GlorotNorm"]  # one seed: its bootstrap interval
    assert one["Interval"] == "bootstrap over test images"
    assert (one["FP32 Accuracy lo"], one["FP32 Accuracy hi"]) == (78.1, 82.1)
    assert math.isnan(one["Percent Accuracy Decrease lo"])  # no bootstrap of a ratio
    narrower = table2(metrics, confidence=0.5).loc[lambda t: t.Network == he.name].iloc[0]
    assert narrower["FP32 Accuracy hi"] - narrower["FP32 Accuracy lo"] == pytest.approx(2.0)


def test_table2_can_omit_failed_cells_as_the_paper_did(metrics):
    names = set(table2(metrics, include_failed=False).Network)
    assert "Regular_Conv_No_BN_RandNorm_Large" not in names
    assert "DWS_Conv_No_BN_GlorotUni" not in names
    assert "Regular_Conv_With_BN_HeUni" in names


def test_mixed_statuses_are_summarised():
    frame = pd.DataFrame(
        [
            metric_row("Regular_Conv_No_BN", "HeUni", 0),
            metric_row("Regular_Conv_No_BN", "HeUni", 1, status="diverged"),
        ]
    )
    row = table2(frame).iloc[0]
    assert row["Status"] == "ok (1/2), diverged (1/2)"
    assert row["n"] == 1 and row["FP32 Accuracy"] == 80.0


def test_table2_says_why_litert_could_not_run_a_cell(metrics):
    reason = "scale_diff / output_scale <= 0.02 was not true"
    metrics["tflite_error"] = None
    failing = metrics["init"] == "GlorotNorm"
    metrics.loc[failing, "tflite_error"] = reason
    metrics.loc[failing, ["tflite_int8_accuracy", "tflite_int8_accuracy_lo"]] = np.nan
    table = table2(metrics).set_index("Network")
    assert table.loc["DWS_Conv_With_BN_GlorotNorm", "TFLite error"] == reason
    assert table.loc["DWS_Conv_With_BN_RandUni_Large", "TFLite error"] == ""
    text = table2_markdown(table.reset_index())
    assert f"| not run: {reason} |" in text
    assert text.count("not run:") == 1


def test_paper_reference_is_the_papers_table2():
    paper = read_paper_table2(REPO / "reference" / "paper_table2.csv")
    assert len(paper) == 33
    row = paper.set_index("network").loc["DWS_Conv_With_BN_HeNorm"]
    assert (row.fp32_accuracy, row.quint8_accuracy, row.qce) == (79.48, 55.56, 2.400)
    for name in paper.network:
        split_cell_name(name)  # every row names a real cell


def test_comparison_matches_rows_by_name(metrics):
    paper = read_paper_table2(REPO / "reference" / "paper_table2.csv")
    side_by_side = comparison(table2(metrics), paper).set_index("Network")
    row = side_by_side.loc["DWS_Conv_With_BN_RandUni_Large"]
    assert row["In"] == "both"
    assert row["FP32 Accuracy (paper)"] == 76.60 and row["FP32 Accuracy (ours)"] == 76.6
    assert row["QUINT8 Accuracy (diff)"] == pytest.approx(74.2 - 74.18)
    assert side_by_side.loc["Regular_Conv_No_BN_RandNorm_Large", "In"] == "ours only"
    assert side_by_side.loc["Regular_Conv_With_BN_GlorotUni", "In"] == "paper only"
    assert len(side_by_side) == 33 + 1  # the paper's rows plus our diverged cell


def test_comparison_markdown_fits_a_screen(metrics):
    paper = read_paper_table2(REPO / "reference" / "paper_table2.csv")
    text = comparison_markdown(comparison(table2(metrics), paper))
    header = text.splitlines()[0].strip("| ").split(" | ")
    assert header[:2] == ["Network", "Status"] and len(header) == 2 + 5
    assert "FP32 Accuracy: paper / ours" in header and "QCE: paper / ours" in header
    assert "| DWS_Conv_With_BN_RandUni_Large | ok | 76.60 / 76.60 | 74.18 / 74.20 |" in text
    # our diverged cell: no paper row and no value of ours; a paper row we lack: no ours
    assert "| Regular_Conv_No_BN_RandNorm_Large | diverged | – / – |" in text
    glorot = next(line for line in text.splitlines() if "Regular_Conv_With_BN_GlorotUni |" in line)
    assert glorot.split(" | ")[2].endswith(" / –")


def test_quantization_split_puts_the_partial_models_beside_the_full_one(metrics):
    rows = metrics.assign(
        weight_only_accuracy=metrics.fp32_accuracy - 1.0,
        activation_only_accuracy=metrics.quint8_accuracy + 0.5,
        weight_only_qce=0.2, activation_only_qce=0.9,
    )  # fmt: skip
    rows["weight_only_accuracy_lo"] = rows.weight_only_accuracy - 2.0
    rows["weight_only_accuracy_hi"] = rows.weight_only_accuracy + 2.0
    split = quantization_split(rows).set_index("Network")
    ru = split.loc["DWS_Conv_With_BN_RandUni_Large"]
    assert ru["W-only Accuracy"] == pytest.approx(75.6) and ru["A-only Accuracy"] == 74.7
    assert ru["W-only Accuracy lo"] == pytest.approx(73.6) and ru["A-only QCE"] == 0.9
    assert math.isnan(ru["A-only Accuracy lo"])  # no interval in the metrics: none shown
    he = split.loc["Regular_Conv_With_BN_HeUni"]  # two seeds at the last epoch: t interval
    assert he["W-only Accuracy"] == pytest.approx(86.0) and he["Interval"] == "t over seeds"
    text = table2_markdown(quantization_split(rows), SPLIT_COLUMNS)
    assert text.splitlines()[0].startswith(
        "| Network | FP32 Accuracy | QUINT8 Accuracy | W-only Accuracy | A-only Accuracy | QCE |"
    )
    assert "| 75.60 [73.60, 77.60] | 74.70 | 1.000 | 0.200 | 0.900 | 1 |" in text


def test_markdown_shows_each_value_with_its_interval(metrics):
    text = table2_markdown(table2(metrics))
    assert "| Regular_Conv_With_BN_HeUni | 87.00 [74.29, 99.71] | 85.50 [" in text
    assert "| DWS_Conv_With_BN_GlorotNorm | 80.10 [78.10, 82.10] | 69.80 [67.80, 71.80] |" in text
    assert "| 1 | bootstrap over test images | ok |" in text
    assert "| 2 | t over seeds | ok |" in text and "diverged" in text


def test_most_sensitive_layer_per_cell():
    def rows(arch, seed, drops, status="ok", epoch=4):
        return [
            dict(
                arch=arch,
                init="HeUni",
                seed=seed,
                epoch=epoch,
                status=status,
                layer=name,
                only_drop=drop,
                only_qce=0.1 * i,
                all_but_gain=drop / 2,
            )  # fmt: skip
            for i, (name, drop) in enumerate(drops.items())
        ]

    frame = pd.DataFrame(
        rows("DWS_Conv_With_BN", 0, {"conv1": 1.0, "block1_dw": 9.0, "fc1": 2.0})
        + rows("DWS_Conv_With_BN", 1, {"conv1": 5.0, "block1_dw": 1.0, "fc1": 2.0})
        + rows("DWS_Conv_With_BN", 1, {"conv1": 0.0, "block1_dw": 50.0, "fc1": 0.0}, epoch=2)
        + rows("Regular_Conv_No_BN", 0, {"conv1": np.nan, "fc1": np.nan}, status="diverged")
    )
    table = most_sensitive_table(frame).set_index("Network")
    row = table.loc["DWS_Conv_With_BN_HeUni"]  # means over seeds at the last epoch: 3, 5, 2
    assert row["Most sensitive layer"] == "block1_dw" and row["Accuracy drop"] == 5.0
    assert row["Runner-up"] == "conv1" and row["Recovered if kept float"] == 2.5
    assert table.loc["Regular_Conv_No_BN_HeUni", "Status"] == "diverged"
    assert pd.isna(table.loc["Regular_Conv_No_BN_HeUni", "Most sensitive layer"])
