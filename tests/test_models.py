"""The four architectures: layer lists, names, parameter counts, initializers, behaviour."""

import numpy as np
import pytest

from quantinit.models import build_model, weighted_layers
from quantinit.registry import ARCHITECTURES

STAGES = ((32,), (64, 64), (128, 128))


def hand_parameter_count(depthwise_separable, batchnorm, first=32, stages=STAGES, dense=(512, 256)):
    """Parameters of the Figure 1 network, counted layer by layer."""
    bn = 4 if batchnorm else 0  # gamma, beta, moving mean, moving variance
    bias = 0 if batchnorm else 1  # layers followed by BN have no bias
    total = 3 * 3 * 3 * first + first * (bias + bn)
    channels = first
    for stage in stages:
        for width in stage:
            if depthwise_separable:
                total += 3 * 3 * channels + channels * (bias + bn)
                total += channels * width + width * (bias + bn)
            else:
                total += 3 * 3 * channels * width + width * (bias + bn)
            channels = width
    features = 4 * 4 * channels  # three 2x2 pools: 32 -> 4
    for units in (*dense, 10):
        total += features * units + units
        features = units
    return total


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_parameter_count_and_layer_names(arch):
    dws, bn = arch.startswith("DWS"), arch.endswith("With_BN")
    model = build_model(arch, "HeUni", seed=0)
    assert model.count_params() == hand_parameter_count(dws, bn)
    names = [layer.name for layer in model.layers]
    conv_names = ["block1_dw", "block1_pw"] if dws else ["block1_conv"]
    for name in ["conv1", *conv_names, "pool1", "pool3", "fc1", "fc2", "logits", "softmax"]:
        assert name in names
    assert ("conv1_bn" in names) == bn
    assert ("block3_dw_bn" in names) == (dws and bn)
    assert ("block3_bn" in names) == (not dws and bn)
    kernels = weighted_layers(arch)
    assert [k.order for k in kernels] == list(range(len(kernels)))
    expected_kinds = ["conv"] + (["depthwise", "pointwise"] * 5 if dws else ["conv"] * 5)
    assert [k.kind for k in kernels] == [*expected_kinds, "dense", "dense", "dense"]
    for k in kernels:
        assert k.name in names and k.activation in names
        assert (k.batchnorm in names) if k.batchnorm else not (bn and k.kind != "dense")


def test_full_width_is_about_1_5_million_parameters():
    assert 1.4e6 < build_model("Regular_Conv_With_BN", "HeNorm", 0).count_params() < 1.5e6


def test_initializer_applies_to_all_conv_but_the_first():
    model = build_model("DWS_Conv_No_BN", "RandUni_Large", seed=0)
    for layer in weighted_layers("DWS_Conv_No_BN"):
        kernel = model.get_layer(layer.name).get_weights()[0]
        if layer.kind in ("depthwise", "pointwise"):
            # RandUni_Large: uniform on +-1, so the largest weight is close to 1
            assert 0.9 < np.abs(kernel).max() <= 1.0
        else:
            # Glorot Uniform: +-sqrt(6 / (fan_in + fan_out)), far below 1 here
            fan_in = np.prod(kernel.shape[:-1])
            fan_out = np.prod(kernel.shape[:-2]) * kernel.shape[-1]
            assert np.abs(kernel).max() <= np.sqrt(6 / (fan_in + fan_out)) + 1e-7


def test_width_multiplier_and_seeds():
    small = build_model("Regular_Conv_With_BN", "HeNorm", 0, width_multiplier=0.25)
    assert small.get_layer("conv1").filters == 8
    assert small.get_layer("block5_conv").filters == 32
    assert small.get_layer("fc1").units == 128
    again = build_model("Regular_Conv_With_BN", "HeNorm", 0, width_multiplier=0.25)
    other = build_model("Regular_Conv_With_BN", "HeNorm", 1, width_multiplier=0.25)
    for a, b in zip(small.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    conv = small.get_layer("block2_conv").get_weights()[0]
    assert not np.array_equal(conv, other.get_layer("block2_conv").get_weights()[0])
    # layers of equal shape get different draws
    assert not np.array_equal(
        small.get_layer("block4_conv").get_weights()[0][:, :, :16],
        small.get_layer("block5_conv").get_weights()[0][:, :, :16],
    )


def test_outputs_are_probabilities_from_uint8_range_inputs():
    model = build_model("DWS_Conv_With_BN", "GlorotUni", 0, width_multiplier=0.25)
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    probabilities = np.asarray(model(images, training=False))
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_vanishing_act_at_initialization():
    """DWS_Conv_No_BN + GlorotUni: activations shrink by orders of magnitude per block."""
    import keras

    model = build_model("DWS_Conv_No_BN", "GlorotUni", 0)
    names = ["conv1_relu", "block1_pw_relu", "block5_pw_relu"]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype("float32")
    first, block1, last = (float(np.max(np.asarray(a))) for a in probe(images))
    assert block1 < first
    assert last < 1e-4 * first
