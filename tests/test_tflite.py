"""Real TFLite full-integer conversion and LiteRT inference of small models (no mocks).

Also checks, on the converted flatbuffers, the claims the tflite module's docstring makes
about how TFLite quantizes (weights symmetric narrow-range int8, int32 biases with
scale = input_scale * weight_scale, min/max activation calibration, uint8 only at the
boundary, fixed softmax output scale).
"""

import numpy as np
import pytest

from quantinit.analysis import kernel_layers
from quantinit.models import build_model
from quantinit.stats import softmax
from quantinit.tflite import (
    WEIGHTED_OPS,
    TFLiteLayers,
    convert_full_integer,
    run_tflite,
    tflite_tensor_details,
)

ARCHS = ("Regular_Conv_No_BN", "DWS_Conv_No_BN", "Residual_No_BN", "InvResidual_No_BN")
# width_multiplier scales the dense layers too: (256, 128) * 0.125 gives 32 and 16 units.
SMALL = {"width_multiplier": 0.125, "dense": (256, 128)}
LOGIT_STD = 3.0


def structured_images(n: int, seed: int) -> np.ndarray:
    """uint8 images with a random colour, a random plane wave and some noise each.

    Uniform noise images all look alike to a random network; these give varied outputs.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    base = rng.uniform(0, 255, (n, 1, 1, 3))
    amplitude = rng.uniform(20, 120, (n, 1, 1, 3))
    fx, fy, phase = (rng.uniform(0.5, 3.0, (n, 1, 1)) for _ in range(3))
    wave = np.sin(2 * np.pi * (fx * xx + fy * yy) + 6 * phase)[..., None]
    images = base + amplitude * wave + rng.normal(0, 10, (n, 32, 32, 3))
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def logits_of(model, images):
    import keras

    sub = keras.Model(model.input, model.get_layer("logits").output)
    return sub.predict(images.astype(np.float32), verbose=0, batch_size=256)


def layer_output(model, name, images):
    import keras

    sub = keras.Model(model.input, model.get_layer(name).output)
    return sub.predict(images.astype(np.float32), verbose=0, batch_size=256)


@pytest.fixture(scope="module")
def representative():
    return structured_images(64, seed=0)


@pytest.fixture(scope="module", params=ARCHS)
def case(request, representative):
    """(model, representative images, per-tensor flatbuffer) for one small architecture.

    fc1 and fc2 get small random biases. The random network's softmax is nearly flat; scaling
    the logits layer's kernel and bias scales the logits exactly, so they are scaled to a mean
    per-image std of LOGIT_STD to make the outputs informative.
    """
    model = build_model(request.param, "HeUni", 0, **SMALL)
    rng = np.random.default_rng(3)
    for name in ("fc1", "fc2"):  # non-zero biases, as trained ones are (zero ones get dropped)
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        spread = float(layer_output(model, name, representative).std())
        layer.set_weights([kernel, rng.normal(0, 0.2 * spread, bias.shape).astype(bias.dtype)])
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    factor = LOGIT_STD / float(logits_of(model, representative).std(axis=1).mean())
    logits.set_weights([kernel * factor, bias * factor])
    return model, representative, convert_full_integer(model, representative)


def interpreter_of(model_bytes):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    return interpreter


def weight_tensors(details):
    weights = [d for d in details if d["role"] == "weight"]
    assert weights, "no conv/depthwise/dense weights found"
    return weights


def test_input_and_output_are_uint8_and_activations_int8(case):
    _, _, model_bytes = case
    interpreter = interpreter_of(model_bytes)
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    # Rescaling(1/255) is folded into conv1: the input is the raw image, scale 1, zero point 0.
    assert inp["quantization"] == (1.0, 0)
    activations = [d for d in tflite_tensor_details(model_bytes) if d["role"] == "activation"]
    assert activations and all(d["dtype"] == "int8" for d in activations)


def test_per_tensor_weights_are_symmetric_narrow_range_int8(case):
    _, _, model_bytes = case
    details = tflite_tensor_details(model_bytes)
    weights = weight_tensors(details)
    assert {d["op"] for d in weights} >= {"CONV_2D", "FULLY_CONNECTED"}
    interpreter = interpreter_of(model_bytes)
    for d in weights:
        assert d["dtype"] == "int8" and d["constant"]
        # FULLY_CONNECTED stores the single scale repeated per output unit: all equal.
        assert len(set(d["scales"])) == 1, d["name"]
        assert set(d["zero_points"]) == {0}, d["name"]
        values = interpreter.get_tensor(d["index"])
        assert values.min() >= -127 and values.max() <= 127, d["name"]  # narrow range
        assert np.abs(values).max() == 127, d["name"]  # scale = max|w| / 127
    if "DWS" in weights[0]["name"]:
        assert "DEPTHWISE_CONV_2D" in {d["op"] for d in weights}


def test_biases_are_int32_with_input_times_weight_scale(case):
    _, _, model_bytes = case
    by_index = {d["index"]: d for d in tflite_tensor_details(model_bytes)}
    interpreter = interpreter_of(model_bytes)
    checked = fully_connected = 0
    for op in interpreter._get_ops_details():
        if op["op_name"] not in WEIGHTED_OPS:
            continue
        inputs = [int(i) for i in op["inputs"]]
        if len(inputs) < 3 or inputs[2] < 0:
            # The logits layer's all-zero bias is dropped (FULLY_CONNECTED without bias).
            assert op["op_name"] == "FULLY_CONNECTED", op
            continue
        activation, weight, bias = (by_index[i] for i in inputs[:3])
        assert bias["dtype"] == "int32" and bias["role"] == "bias"
        assert set(bias["zero_points"]) == {0}
        expected = activation["scales"][0] * np.asarray(weight["scales"])
        # A FULLY_CONNECTED bias has one scale where its weights repeat theirs per unit.
        actual = np.broadcast_to(bias["scales"], expected.shape)
        np.testing.assert_allclose(actual, expected, rtol=1e-6)
        checked += 1
        if op["op_name"] == "FULLY_CONNECTED":
            fully_connected += 1
    assert checked >= 5
    assert fully_connected == 2  # fc1 and fc2, whose biases are non-zero


def test_per_channel_gives_one_scale_per_output_channel(case):
    model, representative, _ = case
    model_bytes = convert_full_integer(model, representative, per_channel=True)
    weights = weight_tensors(tflite_tensor_details(model_bytes))
    convs = [d for d in weights if d["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert convs
    for d in convs:
        channels = d["shape"][d["quantized_dimension"]]
        # CONV_2D kernels are [out, h, w, in] (dim 0); depthwise [1, h, w, channels] (dim 3).
        expected_dim = 0 if d["op"] == "CONV_2D" else 3
        assert d["quantized_dimension"] == expected_dim
        assert len(d["scales"]) == channels > 1, d["name"]
        assert len(set(d["scales"])) > 1, d["name"]
        assert set(d["zero_points"]) == {0}


@pytest.mark.slow
def test_outputs_agree_with_the_float_model(case):
    model, _, model_bytes = case
    images = structured_images(200, seed=1)
    probabilities = run_tflite(model_bytes, images, batch_size=64)
    expected = model.predict(images.astype(np.float32), verbose=0, batch_size=256)
    assert probabilities.shape == (200, 10) and probabilities.dtype == np.float32
    # Each of the 10 uint8 outputs is rounded to a multiple of 1/256 (the output scale).
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=10 / 256)
    mad = float(np.abs(probabilities - expected).mean())
    agreement = float((probabilities.argmax(1) == expected.argmax(1)).mean())
    print(f"{model.name}: mean |p_tflite - p_float| = {mad:.4f}, top-1 agreement {agreement:.3f}")
    # The output step alone is 1/256 = 0.004 (rounding error <= 0.002); the logits step is
    # about 0.08 here (range ~20 / 255), moving probabilities by at most a few hundredths.
    # Measured: 0.006-0.008 and 0.93-0.98.
    assert mad < 0.03
    assert agreement >= 0.85


def test_uneven_batches_equal_batch_size_one(case):
    _, _, model_bytes = case
    images = structured_images(37, seed=2)
    batched = run_tflite(model_bytes, images, batch_size=16)
    single = run_tflite(model_bytes, images, batch_size=1)
    assert batched.shape == (37, 10)
    np.testing.assert_array_equal(batched, single)
    # Float input in 0..255 is rounded to the same uint8 values.
    floats = run_tflite(model_bytes, images.astype(np.float32) + 0.2, batch_size=50)
    np.testing.assert_array_equal(floats, single)


def test_activation_ranges_are_min_max_over_the_representative_data(case):
    """scale = (max - min) / 255 over the data, widened to include 0: no clipping."""
    model, representative, model_bytes = case
    details = tflite_tensor_details(model_bytes)

    def activation(fragment):
        (found,) = [d for d in details if d["role"] == "activation" and fragment in d["name"]]
        assert len(found["scales"]) == 1
        return found["scales"][0], found["zero_points"][0]

    # Logits: an affine (zero-point) range around the observed min..max.
    logits = logits_of(model, representative)
    lo, hi = min(float(logits.min()), 0.0), max(float(logits.max()), 0.0)
    scale, zero = activation("logits")
    np.testing.assert_allclose(scale, (hi - lo) / 255, rtol=1e-3)
    # The zero point is rounded to an integer, shifting the range by at most half a step.
    assert abs((-128 - zero) * scale - lo) <= 0.5 * scale + 1e-6
    assert abs((127 - zero) * scale - hi) <= 0.5 * scale + 1e-6

    # A ReLU output (fused into its Dense): [0, max] with zero point -128.
    relu = layer_output(model, "fc1_relu", representative)
    scale, zero = activation("fc1_relu")
    assert zero == -128
    np.testing.assert_allclose(scale * 255, float(relu.max()), rtol=1e-3)

    # The softmax output ignores the data: fixed scale 1/256, int8 zero point -128,
    # i.e. uint8 zero point 0 at the model output.
    (out,) = [d for d in details if d["role"] == "output"]
    assert out["scales"] == [1 / 256] and out["zero_points"] == [0]
    (softmax,) = [d for d in details if d["role"] == "activation" and d["op"] == "SOFTMAX"]
    assert softmax["scales"] == [1 / 256] and softmax["zero_points"] == [-128]


def test_convert_rejects_empty_representative_data(case):
    model, _, _ = case
    with pytest.raises(ValueError, match="representative_images"):
        convert_full_integer(model, np.zeros((0, 32, 32, 3), np.uint8))


def test_model_with_a_dead_layer_runs_on_builtin_kernels(representative):
    """XNNPACK refuses an all-zero activation range; the fallback kernels still run it."""
    model = build_model("Regular_Conv_No_BN", "HeUni", 0, **SMALL)
    fc2 = model.get_layer("fc2")
    kernel, bias = fc2.get_weights()
    fc2.set_weights([kernel, np.full_like(bias, -1e3)])  # fc2_relu is always 0
    model_bytes = convert_full_integer(model, representative)
    with pytest.warns(UserWarning, match="XNNPACK"):
        probabilities = run_tflite(model_bytes, representative[:8], batch_size=4)
    expected = np.asarray(model.predict(representative[:8], verbose=0))
    # every image gets the same output (only the logits bias reaches it), as in Keras
    np.testing.assert_allclose(probabilities, expected, atol=2 / 256)


def test_layer_outputs_are_the_kernel_layers_outputs_in_order(case):
    """TFLiteLayers' i-th output is the i-th kernel layer's (ReLU'd) output, dequantized."""
    model, _, model_bytes = case
    images = structured_images(50, seed=4)
    layers = kernel_layers(model)
    tflite = TFLiteLayers(model_bytes)
    outputs = tflite(images)
    assert len(outputs) == len(layers) and set(tflite.op_names) <= set(WEIGHTED_OPS)
    for layer, deployed in zip(layers, outputs, strict=True):
        expected = layer_output(model, layer.output, images).astype(np.float64)
        assert deployed.shape == expected.shape, layer.name
        sqnr = 10 * np.log10(np.sum(expected**2) / np.sum((deployed - expected) ** 2))
        assert sqnr > 15, (layer.name, sqnr)  # int8 all the way: far from float32, near float
    # the last op's output are the logits that TFLite's int8 softmax (a lookup-table
    # approximation, up to 0.08 off here) turns into its probabilities
    probabilities = run_tflite(model_bytes, images, batch_size=50)
    assert np.abs(softmax(outputs[-1]) - probabilities).mean() < 0.02
    assert (outputs[-1].argmax(axis=1) == probabilities.argmax(axis=1)).mean() >= 0.9
    assert [o.shape[0] for o in tflite(images[:7])] == [7] * len(layers)  # any batch size
