"""The per-cell tables against numpy calculations done here, and their Parquet schemas."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from quantinit.cellfiles import arrow_schema, schema_markdown, write_table
from quantinit.layerfiles import load_weights, save_weights
from quantinit.sampling import calibration_indices
from quantinit.tables import (
    activation_row,
    layerwise_table,
    metrics_row,
    quantization_table,
)

from conftest import REPO

CELL = {
    "variant": "paper", "arch": "DWS_Conv_With_BN", "init": "HeUni", "seed": 3, "epoch": 7,
    "scheme": "quint8", "status": "ok",
}  # fmt: skip


def test_calibration_draw_is_seeded_and_without_replacement():
    a = calibration_indices(5000, 1024, seed=0)
    assert len(np.unique(a)) == 1024 and a.min() >= 0 and a.max() < 5000
    np.testing.assert_array_equal(a, calibration_indices(5000, 1024, seed=0))
    assert not np.array_equal(a, calibration_indices(5000, 1024, seed=1))
    with pytest.raises(ValueError, match="calibration.num_samples = 6000"):
        calibration_indices(5000, 6000, seed=0)


def test_activation_row_by_hand():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (50, 4, 4, 3)) * np.array([1.0, 3.0, 0.1])
    row = activation_row(x, percentile=1.0, bits=8)
    lo, hi = np.percentile(x, 1), np.percentile(x, 99)
    assert row["clip_lo"] == pytest.approx(lo) and row["clip_hi"] == pytest.approx(hi)
    clipped = np.clip(x, lo, hi)
    ranges = [clipped[..., c].max() - clipped[..., c].min() for c in range(3)]
    np.testing.assert_allclose(row["channel_ranges"], ranges)
    assert row["average_precision"] == pytest.approx(np.mean(ranges) / (hi - lo))
    assert row["min"] == x.min() and row["max"] == x.max()


def test_layerwise_table_by_hand(tmp_path):
    rng = np.random.default_rng(1)
    conv = rng.normal(0, 1, (3, 3, 2, 4)).astype("float32")
    depthwise = rng.normal(0, 1, (3, 3, 4, 1)).astype("float32")
    folded_dw = depthwise * np.array([1, 2, 3, 4], dtype="float32")[None, None, :, None]
    layers = [
        SimpleNamespace(order=0, name="conv1", kind="conv", batchnorm=None, output="conv1_relu"),
        SimpleNamespace(
            order=1, name="block1_dw", kind="depthwise", batchnorm="b", output="block1_dw_relu"
        ),
    ]
    folded = {
        "conv1": {"kernel": conv, "bias": np.zeros(4, "float32")},
        "block1_dw": {"kernel": folded_dw, "bias": np.ones(4, "float32")},
    }
    kinds = {"rescale": "input", "conv1_relu": "conv", "block1_dw_relu": "depthwise"}
    save_weights(tmp_path / "w.npz", layers, {"conv1": conv, "block1_dw": depthwise}, folded, kinds)
    layers_back, trained, folded_kernels = load_weights(tmp_path / "w.npz")
    assert [vars(la) for la in layers_back] == [vars(la) for la in layers]
    calibration = pd.DataFrame(
        {
            "tensor": ["conv1_relu", "block1_dw_relu"],
            "clip_lo": [0.0, 0.0],
            "clip_hi": [2.0, 5.0],
            "clipped_range": [2.0, 5.0],
            "average_precision": [0.5, 0.25],
            "kl_uniform": [0.1, 0.2],
        }
    )
    table = layerwise_table(layers_back, trained, folded_kernels, calibration, bits=8)
    dw = table.set_index("layer").loc["block1_dw"]
    assert (dw.fan_in, dw.fan_out) == (9 * 4, 9)
    assert dw.weight_range == pytest.approx(depthwise.max() - depthwise.min())
    channel = [np.ptp(folded_dw[:, :, c, 0]) for c in range(4)]  # depthwise: input channels
    assert dw.folded_weight_precision == pytest.approx(np.mean(channel) / np.ptp(folded_dw))
    assert dw.activation_range == 5.0 and dw.activation_precision == 0.25
    assert table.set_index("layer").loc["conv1"].fan_in == 9 * 2


def test_metrics_row_by_hand():
    labels = np.array([0, 1, 2, 3])
    p_fp32 = np.eye(10)[[0, 1, 2, 5]] * 0.9 + 0.01  # rows sum to 1; 3 of 4 right
    p_uniform = np.full((4, 10), 0.1)  # argmax = class 0: 1 of 4 right
    row = metrics_row(labels, p_fp32, p_uniform)
    assert row["fp32_accuracy"] == 75.0 and row["quint8_accuracy"] == 25.0
    assert row["percent_accuracy_decrease"] == pytest.approx(100 * (75 - 25) / 75)
    assert row["qce"] == pytest.approx(math.log(10))  # any p_fp32 against uniform outputs
    assert row["qmse"] == pytest.approx(np.mean((p_fp32 - 0.1) ** 2))
    assert math.isnan(row["tflite_int8_accuracy"])


def test_quantization_table_ranges_hold_zero_on_the_grid():
    rng = np.random.default_rng(2)
    kernel = rng.uniform(0.2, 1.0, (3, 3, 2, 5)).astype("float32")  # all positive
    bounds = {"rescale": (0.0, 1.0), "conv1_relu": (0.3, 4.2)}
    kinds = {"conv1": "conv", "rescale": "input", "conv1_relu": "conv"}
    for granularity, channels in (("per_tensor", 1), ("per_channel", 5)):
        scheme = {"bits": 8, "granularity": granularity, "symmetric": False}
        table = quantization_table({"conv1": kernel}, kinds, bounds, scheme).set_index("tensor")
        weight = table.loc["conv1"]
        assert len(weight.scale) == channels and weight.qmin == [0.0] * channels
        activation = table.loc["conv1_relu"]
        assert activation.qmin == [0.0] and activation.qmax == [pytest.approx(4.2)]
        for row in table.itertuples():
            zero_point = -np.array(row.nudged_min) / np.array(row.scale)
            np.testing.assert_allclose(zero_point, np.round(zero_point), atol=1e-3)


def test_write_table_conforms_to_schema_with_missing_columns(tmp_path):
    path = tmp_path / "metrics.parquet"
    write_table(pd.DataFrame([{"fp32_accuracy": 50.0}]), "metrics", CELL, path)
    stored = pq.read_table(path)
    assert stored.schema.equals(arrow_schema("metrics"), check_metadata=False)
    frame = stored.to_pandas()
    assert frame.loc[0, "fp32_accuracy"] == 50.0 and frame.loc[0, "seed"] == 3
    assert pd.isna(frame.loc[0, "qce"]) and frame.loc[0, "scheme"] == "quint8"


def test_write_table_names_missing_keys_and_writes_nothing(tmp_path):
    path = tmp_path / "metrics.parquet"
    without_scheme = {key: value for key, value in CELL.items() if key != "scheme"}
    with pytest.raises(ValueError, match=r"\['scheme'\] missing"):
        write_table(pd.DataFrame([{"fp32_accuracy": 50.0}]), "metrics", without_scheme, path)
    assert not path.exists()


def test_schema_document_is_current():
    assert (REPO / "docs" / "parquet-schemas.md").read_text() == schema_markdown()
