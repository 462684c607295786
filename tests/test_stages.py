"""The per-cell stage functions (what the rule scripts call) against numpy done here."""

import numpy as np
import pandas as pd
import pytest

from quantinit.analysis import kernel_layers
from quantinit.calibration import calibrate
from quantinit.evaluation import evaluate
from quantinit.quantization import fake_quant_reference
from quantinit.stats import softmax
from quantinit.tables import quantize, quantized_activation_bounds

from keras_models import engine_of, folded_of, quantized_network, two_layer_model

SCHEME = {"bits": 8, "granularity": "per_tensor", "symmetric": False, "calibration": "minmax"}


def images(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3)).astype("float32")


def numpy_forward(model, x):
    """The two-layer model by hand: x/255 -> dense -> relu -> dense (logits)."""
    w1, b1 = model.get_layer("fc1").get_weights()
    w2, b2 = model.get_layer("logits").get_weights()
    flat = (x / 255.0).reshape(len(x), -1)
    hidden = np.maximum(flat @ w1 + b1, 0.0)
    return flat, hidden, hidden @ w2 + b2


def test_calibrate_records_each_tensors_range():
    model, x = two_layer_model(), images(64)
    flat, hidden, _ = numpy_forward(model, x)
    kinds = {"rescale": "input", "fc1_relu": "dense"}
    folded = folded_of(model, kernel_layers(model))
    table = calibrate(engine_of(model, batch_size=24), folded, x, kinds, 1.0, 8)  # 3 batches
    table = table.set_index("tensor")
    assert list(table.index) == ["rescale", "fc1_relu"] and list(table.kind) == ["input", "dense"]
    for name, values in (("rescale", flat), ("fc1_relu", hidden)):
        assert table.loc[name, "min"] == pytest.approx(values.min(), abs=1e-5)
        assert table.loc[name, "max"] == pytest.approx(values.max(), rel=1e-5)
        lo, hi = np.percentile(values, [1.0, 99.0])
        assert table.loc[name, "clip_lo"] == pytest.approx(lo, abs=1e-4)
        assert table.loc[name, "clip_hi"] == pytest.approx(hi, rel=1e-4)


def test_quantize_takes_the_calibration_method_s_bounds():
    calibration = pd.DataFrame(
        {"tensor": ["rescale", "fc1_relu"], "kind": ["input", "dense"], "min": [0.0, 0.0],
         "max": [1.0, 6.0], "clip_lo": [0.01, 0.0], "clip_hi": [0.99, 2.0]}
    )  # fmt: skip
    kernel = np.linspace(-1, 1, 12, dtype="float32").reshape(3, 4)
    for method, hi in (("minmax", 6.0), ("percentile", 2.0)):
        table = quantize(
            {"fc1": kernel}, {"fc1": "dense"}, calibration, SCHEME | {"calibration": method}
        )
        bounds = quantized_activation_bounds(table)
        assert set(bounds) == {"rescale", "fc1_relu"}  # activations only
        assert bounds["fc1_relu"] == (0.0, pytest.approx(hi))


def test_evaluate_scores_fp32_and_the_fake_quantized_model():
    model, x = two_layer_model(), images(200, seed=1)
    _, hidden, logits = numpy_forward(model, x)
    labels = np.argmax(logits, axis=1)
    labels[:50] = (labels[:50] + 1) % 4  # 150 of 200 right
    flat = (x / 255.0).reshape(len(x), -1)
    calibration = pd.DataFrame(
        {"tensor": ["rescale", "fc1_relu", "logits"], "kind": ["input", "dense", "dense"],
         "min": [0.0, 0.0, float(logits.min())],
         "max": [1.0, float(hidden.max()), float(logits.max())]}
    )  # fmt: skip
    kernels = {name: model.get_layer(name).get_weights()[0] for name in ("fc1", "logits")}
    table = quantize(kernels, {"fc1": "dense", "logits": "dense"}, calibration, SCHEME)
    intervals = {"confidence": 0.95, "resamples": 1000, "seed": 0}
    network = quantized_network(model, quantized_activation_bounds(table), SCHEME)
    row, predictions = evaluate(
        softmax(logits), network, x, labels, batch_size=64, qce_epsilon=1e-7,
        intervals=intervals,
    )  # fmt: skip
    assert row["fp32_accuracy"] == pytest.approx(75.0)
    assert row["fp32_accuracy_lo"] < 75.0 < row["fp32_accuracy_hi"]
    assert row["quint8_minus_fp32"] == pytest.approx(row["quint8_accuracy"] - 75.0)
    assert len(predictions) == 200 and predictions["fp32_correct"].sum() == 150
    assert row["test_samples"] == 200 and row["tflite_error"] is None
    assert np.isnan(row["tflite_int8_accuracy"])  # no TFLite model given
    # the simulated quint8 model by hand: every tensor and kernel fake-quantized
    bounds = quantized_activation_bounds(table)
    weights = table[table.role == "weight"].set_index("tensor")

    def fq(values, lo, hi):
        return fake_quant_reference(values, lo, hi, 8)

    def fq_kernel(name):
        return fq(kernels[name], weights.loc[name, "qmin"][0], weights.loc[name, "qmax"][0])

    w1, b1 = model.get_layer("fc1").get_weights()
    w2, b2 = model.get_layer("logits").get_weights()
    q_in = fq(flat, *bounds["rescale"])
    q_hidden = fq(np.maximum(q_in @ fq_kernel("fc1") + b1, 0.0), *bounds["fc1_relu"])
    q_logits = fq(q_hidden @ fq_kernel("logits") + b2, *bounds["logits"])
    expected = 100 * np.mean(np.argmax(q_logits, axis=1) == labels)
    assert row["quint8_accuracy"] == pytest.approx(expected, abs=0.5 + 1e-9)  # one image
    # weight-only: float activations, fake-quantized kernels; activation-only: the reverse
    w_hidden = np.maximum(flat @ fq_kernel("fc1") + b1, 0.0)
    w_logits = w_hidden @ fq_kernel("logits") + b2
    a_hidden = fq(np.maximum(q_in @ w1 + b1, 0.0), *bounds["fc1_relu"])
    a_logits = fq(a_hidden @ w2 + b2, *bounds["logits"])
    p_fp32 = softmax(logits)
    for name, by_hand in (("weight_only", w_logits), ("activation_only", a_logits)):
        expected = 100 * np.mean(np.argmax(by_hand, axis=1) == labels)
        assert row[f"{name}_accuracy"] == pytest.approx(expected, abs=0.5 + 1e-9)
        qce = np.mean(-np.sum(p_fp32 * np.log(np.clip(softmax(by_hand), 1e-7, 1)), axis=1))
        assert row[f"{name}_qce"] == pytest.approx(qce, rel=1e-3, abs=1e-5)
        assert row[f"{name}_accuracy_lo"] <= row[f"{name}_accuracy"] <= row[f"{name}_accuracy_hi"]
        assert predictions[f"{name}_correct"].mean() * 100 == pytest.approx(row[f"{name}_accuracy"])
    # the partial models differ from each other and from the full one on these weights
    assert not np.allclose(w_logits, a_logits)
