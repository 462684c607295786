"""Per-tensor quantization error and per-layer sensitivity, against hand calculations."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from quantinit.analysis import (
    fold_model,
    kernel_layers,
    layer_specs,
    quantized_tensors,
    quantized_tensors_of,
)
from quantinit.models import build_model
from quantinit.quantization import fake_quant_reference
from quantinit.schemes import no_tflite_reason
from quantinit.sensitivity import (
    UNIFORM_ROUNDING_RMSE,
    ErrorAccumulator,
    error_stats,
    measure_sensitivity,
    most_sensitive,
    quantization_error_table,
    run_switches,
    sensitivity_table,
    sqnr_db,
    sqnr_table,
    weight_error_table,
)
from quantinit.stats import qce, softmax
from quantinit.tables import quantize, quantized_activation_bounds

from conftest import REPO
from keras_models import folded_of, keras_capture, quantized_network, two_layer_model

BOUNDS = {"rescale": (0.0, 1.0), "fc1_relu": (0.0, 1.7), "logits": (-2.1, 1.3)}
PER_TENSOR = {"bits": 8, "granularity": "per_tensor", "symmetric": False}


def images(n, seed=0):
    """Continuous uniform pixels: the rescaled image spreads evenly over the 8-bit grid."""
    return np.random.default_rng(seed).uniform(0, 255, (n, 32, 32, 3)).astype("float32")


def quant_weights(w, granularity, bits=8):
    """The scheme's asymmetric fake-quantized kernel of a dense layer, in numpy."""
    if granularity == "per_tensor":
        return fake_quant_reference(w, min(w.min(), 0), max(w.max(), 0), bits)
    lo, hi = np.minimum(w.min(axis=0), 0), np.maximum(w.max(axis=0), 0)
    return fake_quant_reference(w, lo, hi, bits, channel_axis=1)


def step(lo, hi):
    return (hi - lo) / 255


def numpy_forward(model, x, quantized, granularity="per_tensor", bits=8):
    """{tensor: (value before, value after its fake-quant)} of the two-layer model, by hand.

    `quantized`: the tensors/layers quantized ("rescale", "fc1", "logits"); a kernel layer
    name quantizes both its kernel and its output tensor.
    """
    w1, b1 = model.get_layer("fc1").get_weights()
    w2, b2 = model.get_layer("logits").get_weights()
    if "fc1" in quantized:
        w1 = quant_weights(w1, granularity, bits)
    if "logits" in quantized:
        w2 = quant_weights(w2, granularity, bits)

    def fq(name, layer, t):
        return fake_quant_reference(t, *BOUNDS[name], bits) if layer in quantized else t

    values = {}
    pre = x.reshape(len(x), -1) * np.float32(1 / 255)
    values["rescale"] = (pre, fq("rescale", "rescale", pre))
    pre = np.maximum(values["rescale"][1] @ w1 + b1, 0)
    values["fc1_relu"] = (pre, fq("fc1_relu", "fc1", pre))
    pre = values["fc1_relu"][1] @ w2 + b2
    values["logits"] = (pre, fq("logits", "logits", pre))
    return values


def numpy_stats(x, x_q, scale):
    d = (x_q.astype(np.float64) - x.astype(np.float64)).ravel()
    mse = np.mean(d**2)
    return {
        "mse": mse,
        "mae": np.mean(np.abs(d)),
        "max_abs": np.abs(d).max(),
        "rmse_over_scale": np.sqrt(mse) / scale,
    }


def test_accumulating_batches_equals_one_pass():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (37, 5)).astype("float32")
    x_q = fake_quant_reference(x, -2.0, 2.0)
    accumulator = ErrorAccumulator()
    for start in range(0, 37, 8):
        accumulator.update(x[start : start + 8], x_q[start : start + 8])
    got = accumulator.result(0.01)
    one_pass = ErrorAccumulator()
    one_pass.update(x, x_q)
    expected = numpy_stats(x, x_q, 0.01)  # float64 throughout
    for key, value in expected.items():
        assert got[key] == pytest.approx(one_pass.result(0.01)[key], rel=1e-12)
        assert got[key] == pytest.approx(value, rel=1e-6)  # float32 squares, float64 sums
    assert got["max_abs"] > 0
    with pytest.raises(ValueError, match="no values"):
        ErrorAccumulator().result(1.0)


def test_uniform_values_give_rounding_noise_of_one_over_sqrt12():
    x = np.random.default_rng(3).uniform(0, 1, 200_000).astype("float32")
    stats = error_stats(x, fake_quant_reference(x, 0.0, 1.0), step(0.0, 1.0))
    assert UNIFORM_ROUNDING_RMSE == pytest.approx(0.2887, abs=1e-4)
    assert stats["rmse_over_scale"] == pytest.approx(UNIFORM_ROUNDING_RMSE, rel=0.02)
    assert stats["max_abs"] <= step(0.0, 1.0) / 2 * (1 + 1e-4)
    # values on the grid are not changed at all
    on_grid = np.arange(256, dtype="float32") / 255
    assert error_stats(on_grid, fake_quant_reference(on_grid, 0.0, 1.0), 1 / 255)["mse"] < 1e-14


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_quantization_error_table_equals_quantizing_by_hand(granularity):
    model = two_layer_model()
    scheme = {**PER_TENSOR, "granularity": granularity}
    x = images(23, seed=2)
    network = quantized_network(model, BOUNDS, scheme, batch_size=5)  # 5 batches
    table = quantization_error_table(network, x)
    assert list(table.tensor) == ["rescale", "fc1_relu", "logits"]
    assert list(table.order) == [0, 1, 2]
    assert list(table.kind) == ["input", "dense", "dense"]
    values = numpy_forward(model, x, {"rescale", "fc1", "logits"}, granularity)
    for row in table.itertuples():
        scale = step(*BOUNDS[row.tensor])
        assert row.scale == pytest.approx(scale, rel=1e-5)
        expected = numpy_stats(*values[row.tensor], scale)
        # float32 summation order differs between LiteRT and numpy
        assert row.mse == pytest.approx(expected["mse"], rel=1e-3)
        assert row.mae == pytest.approx(expected["mae"], rel=1e-3)
        assert row.max_abs == pytest.approx(expected["max_abs"], rel=1e-3, abs=1e-6)
        assert row.rmse_over_scale == pytest.approx(expected["rmse_over_scale"], rel=1e-3)
    # the continuous uniform image is pure rounding noise on the input grid
    rescale = table.set_index("tensor").loc["rescale"]
    assert rescale.rmse_over_scale == pytest.approx(UNIFORM_ROUNDING_RMSE, rel=0.05)


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_weight_error_table_equals_quantizing_by_hand(granularity):
    model = two_layer_model()
    layers = kernel_layers(model)
    scheme = {**PER_TENSOR, "granularity": granularity}
    table = weight_error_table(folded_of(model, layers), layers, scheme)
    assert list(table.layer) == ["fc1", "logits"]
    assert list(table.kind) == ["dense", "dense"]
    for row in table.itertuples():
        w = model.get_layer(row.layer).get_weights()[0]
        if granularity == "per_tensor":
            scale = step(min(w.min(), 0), max(w.max(), 0))
        else:  # the mean channel step
            scale = np.mean(step(np.minimum(w.min(axis=0), 0), np.maximum(w.max(axis=0), 0)))
        expected = numpy_stats(w, quant_weights(w, granularity), scale)
        assert row.weight_scale == pytest.approx(scale, rel=1e-5)
        assert row.weight_mse == pytest.approx(expected["mse"], rel=1e-5)
        assert row.weight_mae == pytest.approx(expected["mae"], rel=1e-5)
        assert row.weight_max_abs == pytest.approx(expected["max_abs"], rel=1e-5)
        assert row.weight_rmse_over_scale == pytest.approx(expected["rmse_over_scale"], rel=1e-4)
        assert 0.2 < row.weight_rmse_over_scale < 0.4  # many weights: close to 1/sqrt(12)


def test_sensitivity_equals_quantizing_one_layer_by_hand():
    model = two_layer_model()
    x = images(64, seed=4)
    p_fp32 = softmax(numpy_forward(model, x, set())["logits"][1])
    rng = np.random.default_rng(5)
    # half the labels agree with the float model, so accuracies are far from 0 and 100
    labels = np.where(rng.uniform(size=64) < 0.5, p_fp32.argmax(1), rng.integers(0, 4, 64))
    # 4 bits: every configuration's QCE differs from the others by far more than round-off
    network = quantized_network(model, BOUNDS, {**PER_TENSOR, "bits": 4}, batch_size=16)
    table = sensitivity_table(run_switches(network, x, chunk_size=24), labels)  # 3 chunks
    assert list(table.layer) == ["fc1", "logits"]
    rows = table.set_index("layer")

    def by_hand(quantized):
        p = softmax(numpy_forward(model, x, quantized, bits=4)["logits"][1])
        return 100 * np.mean(p.argmax(1) == labels), qce(p_fp32, p)

    cases = {
        ("fc1", "only"): {"fc1"},
        ("fc1", "all_but"): {"rescale", "logits"},
        ("logits", "only"): {"logits"},
        ("logits", "all_but"): {"rescale", "fc1"},
    }
    for (layer, mode), quantized in cases.items():
        acc, cross_entropy = by_hand(quantized)
        assert rows.loc[layer, f"{mode}_accuracy"] == pytest.approx(acc)
        assert rows.loc[layer, f"{mode}_qce"] == pytest.approx(cross_entropy, abs=1e-5)
    fp32_accuracy = 100 * np.mean(p_fp32.argmax(1) == labels)
    quint8_accuracy, quint8_qce = by_hand({"rescale", "fc1", "logits"})
    np.testing.assert_allclose(rows.fp32_accuracy, fp32_accuracy)
    np.testing.assert_allclose(rows.quint8_accuracy, quint8_accuracy)
    np.testing.assert_allclose(rows.quint8_qce, quint8_qce, rtol=0, atol=1e-5)
    np.testing.assert_allclose(rows.only_drop, fp32_accuracy - rows.only_accuracy)
    np.testing.assert_allclose(rows.all_but_gain, rows.all_but_accuracy - quint8_accuracy)


@pytest.mark.parametrize(
    "scheme",
    [
        {"bits": 8, "granularity": "per_channel", "symmetric": True},
        {"bits": 8, "granularity": "per_tensor", "symmetric": False},
    ],
)
@pytest.mark.parametrize("arch", ["DWS_Conv_With_BN", "Residual_With_BN"])
def test_switches_give_the_float_and_the_quantized_network_and_restore_them(scheme, arch):
    model = build_model(arch, "HeUni", 0, width_multiplier=0.25, dense=(32, 16))
    folded, _ = fold_model(model)
    x = images(40, seed=6)
    acts = keras_capture(folded, x, quantized_tensors(folded))
    bounds = {name: (float(a.min()), float(a.max())) for name, a in acts.items()}
    network = quantized_network(folded, bounds, scheme, batch_size=16)
    # a switch per kernel layer (kernel and output), the input, and each Add's output
    adds = [name for name, kind in quantized_tensors_of(layer_specs(folded)).items()
            if kind == "add"]  # fmt: skip
    assert (len(adds) == 5) == (arch == "Residual_With_BN")
    assert sorted(network.switches) == sorted(["rescale", *(k.name for k in network.layers), *adds])
    network.configure_all()
    p_quant = network.predict(x)
    network.quantize_all()  # the same configuration, named by switches
    assert network.quantized == network.switches
    np.testing.assert_array_equal(network.predict(x), p_quant)
    for layer in network.layers:
        network.quantize([layer.name])
        assert network.quantized == [layer.name]
        assert not np.array_equal(network.predict(x[:7]), p_quant[:7])
    network.quantize([])
    p_float = network.predict(x)
    np.testing.assert_allclose(p_float, folded.predict(x, verbose=0), atol=1e-5)
    assert not np.array_equal(p_float, p_quant)
    network.quantize_all()  # switching back restores the quantized kernels
    np.testing.assert_array_equal(network.predict(x), p_quant)
    with pytest.raises(ValueError, match="unknown switches"):
        network.quantize(["conv1_relu"])


def test_sqnr_local_and_accumulated_equal_quantizing_by_hand():
    model, x = two_layer_model(), images(300, seed=4)
    network = quantized_network(model, BOUNDS, PER_TENSOR, batch_size=64)
    table = sqnr_table(run_switches(network, x, chunk_size=128)).set_index("layer")  # 3 chunks
    float_values = numpy_forward(model, x, quantized=set())
    accumulated = numpy_forward(model, x, quantized={"rescale", "fc1", "logits"})

    def db(tensor, values):
        x_f = float_values[tensor][1].astype(np.float64)
        return 10 * np.log10(np.sum(x_f**2) / np.sum((values[tensor][1] - x_f) ** 2))

    for layer, tensor in (("fc1", "fc1_relu"), ("logits", "logits")):
        local = numpy_forward(model, x, quantized={layer})  # float input, this layer quantized
        assert table.loc[layer, "sqnr_local_db"] == pytest.approx(db(tensor, local), abs=0.05)
        assert table.loc[layer, "sqnr_accumulated_db"] == pytest.approx(
            db(tensor, accumulated), abs=0.05
        )
    # the accumulated error holds the earlier layers' too: never a better SQNR at the logits
    assert table.loc["logits", "sqnr_accumulated_db"] < table.loc["logits", "sqnr_local_db"]


def test_sqnr_of_the_tflite_model_equals_its_layer_outputs_by_hand():
    from quantinit.tflite import TFLiteLayers, convert_full_integer

    model, x = two_layer_model(), images(120, seed=5)
    tflite = TFLiteLayers(convert_full_integer(model, x[:64]))
    network = quantized_network(model, BOUNDS, PER_TENSOR)
    table = sqnr_table(run_switches(network, x, tflite, chunk_size=50)).set_index("layer")
    deployed = dict(zip(["fc1", "logits"], tflite(x), strict=True))
    float_values = numpy_forward(model, x, quantized=set())
    simulated = numpy_forward(model, x, quantized={"rescale", "fc1", "logits"})
    for layer, tensor in (("fc1", "fc1_relu"), ("logits", "logits")):
        for column, signal in (("tflite_sqnr_db", float_values),
                               ("tflite_vs_simulated_sqnr_db", simulated)):  # fmt: skip
            reference = signal[tensor][1].astype(np.float64)
            by_hand = 10 * np.log10(
                np.sum(reference**2) / np.sum((deployed[layer] - reference) ** 2)
            )
            assert table.loc[layer, column] == pytest.approx(by_hand, abs=0.05), column


def quantize_table(model, bounds):
    """The quantization table of the two-layer model with `bounds` as its activation ranges."""
    kinds = {"rescale": "input", "fc1_relu": "dense", "logits": "dense"}
    calibration = pd.DataFrame(
        {"tensor": list(bounds), "kind": [kinds[t] for t in bounds],
         "min": [lo for lo, _ in bounds.values()], "max": [hi for _, hi in bounds.values()]}
    )  # fmt: skip
    kernels = {name: model.get_layer(name).get_weights()[0] for name in ("fc1", "logits")}
    scheme = PER_TENSOR | {"calibration": "minmax"}
    return quantize(kernels, {"fc1": "dense", "logits": "dense"}, calibration, scheme)


def test_sensitivity_says_why_the_tflite_columns_are_empty():
    model, x = two_layer_model(), images(40, seed=6)
    bounds = quantized_activation_bounds(quantize_table(model, BOUNDS))
    network = quantized_network(model, bounds, PER_TENSOR)
    folded = folded_of(model, kernel_layers(model))
    four_bits = PER_TENSOR | {"bits": 4, "calibration": "percentile", "percentile": 1.0}
    for tflite_model, reason in ((b"", no_tflite_reason(four_bits)),
                                 (b"not a flatbuffer", "LiteRT could not run")):  # fmt: skip
        errors, _, _ = measure_sensitivity(
            network, folded, PER_TENSOR, x, np.zeros(40, int), 1e-7, tflite_model,
            no_tflite=no_tflite_reason(four_bits),
        )  # fmt: skip
        assert errors["tflite_sqnr_db"].isna().all()
        assert all(reason in text for text in errors["tflite_error"]), errors["tflite_error"]
        assert np.isfinite(errors["sqnr_accumulated_db"]).all()


def test_a_model_litert_refuses_at_run_time_leaves_the_tflite_columns_empty():
    """tests/data/litert_refuses_at_run_time.tflite: the quick preset's
    Regular_Conv_No_BN_RandUni_Large int8 model (width 0.25), which LiteRT loads but refuses
    to run ("scale_diff / output_scale <= 0.02 ... FULLY_CONNECTED failed to prepare")."""
    from quantinit.tflite import TFLiteLayers

    model = build_model("Regular_Conv_No_BN", "HeUni", 0, width_multiplier=0.25)
    tflite = TFLiteLayers((REPO / "tests/data/litert_refuses_at_run_time.tflite").read_bytes())
    x = images(20, seed=7)
    bounds = {name: (0.0, 4.0) for name in quantized_tensors(model)}
    table = sqnr_table(run_switches(quantized_network(model, bounds, PER_TENSOR), x, tflite))
    assert (
        table["tflite_sqnr_db"].isna().all() and table["tflite_vs_simulated_sqnr_db"].isna().all()
    )
    assert all("scale_diff / output_scale" in text for text in table["tflite_error"])
    assert table["sqnr_accumulated_db"].notna().all()


def test_sqnr_of_no_noise_and_of_a_silent_signal():
    assert sqnr_db(1.0, 0.0) == float("inf") and sqnr_db(0.0, 1e-3) == float("-inf")
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)


def test_most_sensitive_ranks_by_accuracy_drop_then_qce():
    table = pd.DataFrame(
        {
            "layer": ["conv1", "block1_dw", "block1_pw", "fc1", "logits"],
            "fp32_accuracy": 80.0,
            "only_accuracy": [79.0, 70.0, 79.0, 80.0, np.nan],
            "only_qce": [0.3, 0.9, 0.5, 0.1, np.nan],
        }
    )
    assert most_sensitive(table, k=3) == ["block1_dw", "block1_pw", "conv1"]
    assert most_sensitive(table, k=10)[-1] == "logits"


def test_module_import_does_not_load_tensorflow():
    code = (
        "import sys; import quantinit.sensitivity; "
        "sys.exit(any(m in sys.modules for m in ('tensorflow', 'keras', 'ai_edge_litert')))"
    )
    env = {"PYTHONPATH": str(REPO / "src")}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0
