"""The LiteRT engine: the folded network and the simulated quantized network without
TensorFlow, against Keras and against quantizing by hand in numpy."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from quantinit.analysis import fold_model, kernel_layers, layer_specs, quantized_tensors_of
from quantinit.engine import (
    ENGINE_FORMAT,
    QUANT_SUFFIX,
    Engine,
    EngineError,
    build_engine,
    folded_weights,
    save_engine,
)
from quantinit.models import build_model
from quantinit.quantization import activation_range, fake_quant_reference
from quantinit.registry import ARCHITECTURES
from quantinit.stats import softmax

from conftest import REPO
from keras_models import (
    engine_of,
    folded_of,
    keras_capture,
    quantized_network,
    residual_model,
    two_layer_model,
)

SMALL = dict(width_multiplier=0.25, dense=(32, 16))


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 32, 32, 3)).astype("float32")


def randomized_folded(arch, seed=0):
    """A folded network of `arch` whose BN had non-trivial statistics, as after training."""
    model = build_model(arch, "HeUni", seed, **SMALL)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 0.3, n),
                 rng.uniform(0.05, 3, n)]
            )  # fmt: skip
    return fold_model(model)[0]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_engine_computes_the_keras_network_on_every_architecture(arch):
    folded = randomized_folded(arch)
    engine = engine_of(folded, batch_size=7)  # 20 images: three batches, the last padded
    x = images(20)
    tensors = list(engine.tensors)
    assert engine.tensors == quantized_tensors_of(layer_specs(folded))
    got = engine.collect(x, engine.quantizers({}), ["probabilities", *tensors])
    expected = keras_capture(folded, x, [*tensors, "softmax"])
    np.testing.assert_allclose(got["probabilities"], expected["softmax"], rtol=0, atol=1e-5)
    for name in tensors:  # float32 round-off, relative to each tensor's scale
        scale = max(float(np.abs(expected[name]).max()), 1e-6)
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize(
    "scheme",
    [
        {"bits": 8, "granularity": "per_tensor", "symmetric": False},
        {"bits": 4, "granularity": "per_channel", "symmetric": True},
    ],
)
def test_the_engine_s_fake_quant_is_the_reference_bit_for_bit(scheme):
    """Each tensor after its fake-quant step is exactly fake_quant_reference of the same
    tensor before it, with the range the scheme gives its bounds."""
    folded = randomized_folded("Residual_With_BN")
    x = images(9, seed=1)
    float_values = keras_capture(folded, x, list(quantized_tensors_of(layer_specs(folded))))
    bounds = {t: (float(np.quantile(a, 0.02)), float(np.quantile(a, 0.98)))
              for t, a in float_values.items()}  # fmt: skip
    network = quantized_network(folded, bounds, scheme)
    network.configure_all()
    names = list(network.engine.tensors)
    (outputs,) = network.run(x, [n for t in names for n in (t, f"{t}{QUANT_SUFFIX}")])
    activation_scheme = {**scheme, "granularity": "per_tensor"}
    for tensor in names:
        qrange = activation_range(*bounds[tensor], activation_scheme)
        expected = fake_quant_reference(outputs[tensor], *qrange)
        np.testing.assert_array_equal(outputs[f"{tensor}{QUANT_SUFFIX}"], expected)
        assert len(np.unique(expected)) <= 2 ** scheme["bits"]


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_quantized_network_equals_quantizing_by_hand(granularity):
    model = two_layer_model()
    scheme = {"bits": 8, "granularity": granularity, "symmetric": False}
    bounds = {"rescale": (0.0, 1.0), "fc1_relu": (0.0, 1.7), "logits": (-2.1, 1.3)}
    network = quantized_network(model, bounds, scheme)
    network.configure_all()
    x = images(16, seed=2)

    def quant_weights(w):
        if granularity == "per_tensor":
            return fake_quant_reference(w, min(w.min(), 0), max(w.max(), 0))
        lo, hi = np.minimum(w.min(axis=0), 0), np.maximum(w.max(axis=0), 0)
        return fake_quant_reference(w, lo, hi, channel_axis=1)

    w1, b1 = model.get_layer("fc1").get_weights()
    w2, b2 = model.get_layer("logits").get_weights()
    h = fake_quant_reference(x.reshape(16, -1) / np.float32(255), 0.0, 1.0)
    h = fake_quant_reference(np.maximum(h @ quant_weights(w1) + b1, 0), 0.0, 1.7)
    logits = fake_quant_reference(h @ quant_weights(w2) + b2, -2.1, 1.3)
    # Up to float32 summation order; a flipped rounding would show as a whole step (~0.013).
    np.testing.assert_allclose(network.predict(x), softmax(logits), atol=2e-3)
    # and quantization really happened: logits lie on the 8-bit grid of [-2.1, 1.3]
    (outputs,) = network.run(x, ["logits_quant"])
    grid, step = outputs["logits_quant"], (1.3 + 2.1) / 255
    assert len(np.unique(np.round(grid / step, 3))) <= 256
    np.testing.assert_allclose(np.round(grid / step) * step, grid, atol=1e-5)


def test_residual_quantized_network_equals_quantizing_by_hand():
    """A kernel that feeds an Add is quantized before it, the Add's output after its ReLU:
    what TFLite's ADD (two quantized inputs, fused ReLU) computes."""
    model = residual_model()
    assert quantized_tensors_of(layer_specs(model)) == {
        "rescale": "input", "fc1_relu": "dense", "fc2": "dense", "add_relu": "add",
        "logits": "dense",
    }  # fmt: skip
    scheme = {"bits": 8, "granularity": "per_tensor", "symmetric": False}
    bounds = {"rescale": (0.0, 1.0), "fc1_relu": (0.0, 1.7), "fc2": (-1.2, 0.9),
              "add_relu": (0.0, 2.3), "logits": (-2.1, 1.3)}  # fmt: skip
    network = quantized_network(model, bounds, scheme)
    network.configure_all()
    x = images(16, seed=2)

    def weights(name):
        w, b = model.get_layer(name).get_weights()
        return fake_quant_reference(w, min(w.min(), 0), max(w.max(), 0)), b

    (w1, b1), (w2, b2), (w3, b3) = (weights(n) for n in ("fc1", "fc2", "logits"))
    h = fake_quant_reference(x.reshape(16, -1) / np.float32(255), 0.0, 1.0)
    h = fake_quant_reference(np.maximum(h @ w1 + b1, 0), 0.0, 1.7)
    body = fake_quant_reference(h @ w2 + b2, -1.2, 0.9)
    s = fake_quant_reference(np.maximum(body + h, 0), 0.0, 2.3)
    logits = fake_quant_reference(s @ w3 + b3, -2.1, 1.3)
    np.testing.assert_allclose(network.predict(x), softmax(logits), atol=2e-3)


def test_weight_only_and_activation_only_quantize_one_side():
    model = two_layer_model()
    scheme = {"bits": 4, "granularity": "per_tensor", "symmetric": False}
    bounds = {"rescale": (0.0, 1.0), "fc1_relu": (0.0, 1.7), "logits": (-2.1, 1.3)}
    network = quantized_network(model, bounds, scheme)
    x = images(8, seed=3)
    w1, b1 = model.get_layer("fc1").get_weights()
    w2, b2 = model.get_layer("logits").get_weights()

    def by_hand(weights: bool, activations: bool):
        def w(k):
            return fake_quant_reference(k, min(k.min(), 0), max(k.max(), 0), 4) if weights else k

        def a(t, lo, hi):
            return fake_quant_reference(t, lo, hi, 4) if activations else t

        h = a(x.reshape(8, -1) / np.float32(255), 0.0, 1.0)
        h = a(np.maximum(h @ w(w1) + b1, 0), 0.0, 1.7)
        return softmax(a(h @ w(w2) + b2, -2.1, 1.3))

    for weights, activations in ((True, False), (False, True), (False, False)):
        network.configure_all(kernels=weights, tensors=activations)
        np.testing.assert_allclose(network.predict(x), by_hand(weights, activations), atol=2e-3)


def test_one_engine_serves_every_cell_of_its_architecture(tmp_path):
    """Built from one network, saved and loaded, the engine computes another cell's network
    (other weights, same architecture) once its weights are set."""
    first, second = (
        randomized_folded("DWS_Conv_With_BN", 0),
        randomized_folded("DWS_Conv_With_BN", 1),
    )
    save_engine(*build_engine(first), tmp_path / "e.tflite", tmp_path / "e.json")
    engine = Engine.load(tmp_path / "e.tflite", tmp_path / "e.json")
    x = images(12, seed=4)
    for model in (second, first, second):
        engine.set_weights(folded_weights(folded_of(model, kernel_layers(model))))
        np.testing.assert_allclose(
            engine.predict(x, engine.quantizers({})), model.predict(x, verbose=0), atol=1e-5
        )


def test_the_engine_refuses_what_does_not_fit_it(tmp_path):
    folded = randomized_folded("Regular_Conv_With_BN")
    flatbuffer, manifest = build_engine(folded)
    engine = Engine(flatbuffer, manifest)
    layers = kernel_layers(folded)
    tensors = quantized_tensors_of(layer_specs(folded))
    engine.check_network(layers, tensors)  # its own network: no complaint
    other = fold_model(build_model("DWS_Conv_With_BN", "HeUni", 0, **SMALL))[0]
    with pytest.raises(EngineError, match="rebuild the engine for this network"):
        engine.check_network(kernel_layers(other), quantized_tensors_of(layer_specs(other)))
    weights = folded_weights(folded_of(folded, layers))
    with pytest.raises(EngineError, match=r"conv1/kernel has shape \[3, 3, 3, 4\]"):
        engine.set_weights(weights | {"conv1/kernel": np.zeros((3, 3, 3, 4), np.float32)})
    with pytest.raises(EngineError, match="no values for"):
        engine.set_weights({k: v for k, v in weights.items() if k != "logits/bias"})
    engine.set_weights(weights)
    with pytest.raises(EngineError, match="images of shape"):
        engine.predict(np.zeros((2, 16, 16, 3), np.float32), engine.quantizers({}))
    with pytest.raises(EngineError, match="no quantized tensors"):
        engine.quantizers({"pool1": (0.0, 1.0, 1.0, 0.0, 1.0)})
    with pytest.raises(EngineError, match=f"this version reads {ENGINE_FORMAT}"):
        Engine(flatbuffer, manifest | {"format": ENGINE_FORMAT + 1})


def test_the_analysis_stages_run_without_tensorflow(tmp_path):
    """Calibration, the simulated quantized network and the sensitivity analysis on a saved
    engine, in a process that never imports TensorFlow or Keras."""
    folded = randomized_folded("Residual_No_BN")
    save_engine(*build_engine(folded), tmp_path / "e.tflite", tmp_path / "e.json")
    layers = kernel_layers(folded)
    np.savez(
        tmp_path / "w.npz",
        **{f"{k}/{part}": v for k, w in folded_of(folded, layers).items() for part, v in w.items()},
    )
    code = f"""
import sys
import numpy as np
from quantinit.calibration import calibrate
from quantinit.engine import Engine, QuantizedNetwork
from quantinit.sensitivity import measure_sensitivity

stored = np.load({str(tmp_path / "w.npz")!r})
folded = {{}}
for key in stored.files:
    layer, part = key.split("/")
    folded.setdefault(layer, {{}})[part] = stored[key]
engine = Engine.load({str(tmp_path / "e.tflite")!r}, {str(tmp_path / "e.json")!r})
x = np.random.default_rng(0).uniform(0, 255, (40, 32, 32, 3)).astype("float32")
scheme = {{"bits": 8, "granularity": "per_tensor", "symmetric": False}}
table = calibrate(engine, folded, x, engine.tensors, 1.0, 8)
bounds = {{row.tensor: (row.clip_lo, row.clip_hi) for row in table.itertuples()}}
network = QuantizedNetwork(engine, folded, bounds, scheme)
errors, sensitivity, most = measure_sensitivity(
    network, folded, scheme, x, np.zeros(40, int), 1e-7, no_tflite="none"
)
loaded = [m for m in ("tensorflow", "keras") if m in sys.modules]
print(len(table), len(errors), len(sensitivity), loaded)
sys.exit(1 if loaded else 0)
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO / "src")},
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tensors = len(quantized_tensors_of(layer_specs(folded)))
    assert result.stdout.split()[:3] == [str(tensors), str(len(layers)), str(len(layers))]
