"""The architectures: layer lists, names, parameter counts, initializers, behaviour."""

import numpy as np
import pytest

from quantinit.models import build_model, weighted_layers
from quantinit.registry import ARCHITECTURES

STAGES = ((32,), (64, 64), (128, 128))


def hand_parameter_count(block, batchnorm, first=32, stages=STAGES, dense=(512, 256), t=6):
    """Parameters of the Figure 1 network built from `block`, counted layer by layer."""
    bn = 4 if batchnorm else 0  # gamma, beta, moving mean, moving variance
    bias = 0 if batchnorm else 1  # layers followed by BN have no bias

    def conv(kernel, c_in, c_out):
        return kernel * kernel * c_in * c_out + c_out * (bias + bn)

    total = conv(3, 3, first)
    channels = first
    for stage in stages:
        for width in stage:
            if block == "separable":
                total += 3 * 3 * channels + channels * (bias + bn) + conv(1, channels, width)
            elif block == "conv":
                total += conv(3, channels, width)
            elif block == "residual":  # two 3x3 convs, a 1x1 projection where width changes
                total += conv(3, channels, width) + conv(3, width, width)
                total += conv(1, channels, width) if channels != width else 0
            else:  # inverted residual: 1x1 expand by t, depthwise 3x3, 1x1 project
                expanded = channels * t
                total += conv(1, channels, expanded)
                total += 3 * 3 * expanded + expanded * (bias + bn) + conv(1, expanded, width)
            channels = width
    features = 4 * 4 * channels  # three 2x2 pools: 32 -> 4
    for units in (*dense, 10):
        total += features * units + units
        features = units
    return total


# kernel kinds of one block, in the plan's order, for a block that keeps / changes the width
BLOCK_KINDS = {
    "conv": (["conv"], ["conv"]),
    "separable": (["depthwise", "pointwise"], ["depthwise", "pointwise"]),
    "residual": (["conv", "conv"], ["conv", "conv", "pointwise"]),
    "inverted_residual": (["pointwise", "depthwise", "pointwise"],) * 2,
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_parameter_count_and_layer_names(arch):
    block, bn = ARCHITECTURES[arch].block, ARCHITECTURES[arch].batchnorm
    model = build_model(arch, "HeUni", seed=0)
    assert model.count_params() == hand_parameter_count(block, bn)
    names = [layer.name for layer in model.layers]
    for name in ["conv1", "pool1", "pool3", "fc1", "fc2", "logits", "softmax"]:
        assert name in names
    assert ("conv1_bn" in names) == bn
    dws = block == "separable"
    if block in ("separable", "conv"):
        assert ("block1_dw" in names) == dws and ("block1_conv" in names) == (not dws)
        assert ("block3_dw_bn" in names) == (dws and bn)
        assert ("block3_bn" in names) == (not dws and bn)
    kernels = weighted_layers(arch)
    assert [k.order for k in kernels] == list(range(len(kernels)))
    # widths 32 -> 32, 64, 64, 128, 128: blocks 2 and 4 change the width
    blocks = [BLOCK_KINDS[block][b in (2, 4)] for b in range(1, 6)]
    expected_kinds = ["conv"] + [kind for kinds in blocks for kind in kinds]
    assert [k.kind for k in kernels] == [*expected_kinds, "dense", "dense", "dense"]
    for k in kernels:
        assert k.name in names and k.activation in names
        assert (k.batchnorm in names) if k.batchnorm else not (bn and k.kind != "dense")


def test_residual_blocks_add_their_input_or_its_projection():
    """Residual: every block adds, through a 1x1 projection where the width changes;
    inverted residual: only the blocks whose input and output shapes match add."""
    import keras

    def adds(arch):
        model = build_model(arch, "HeUni", seed=0, width_multiplier=0.25)
        return {
            layer.name: sorted(t._keras_history.operation.name for t in layer.input)
            for layer in model.layers
            if isinstance(layer, keras.layers.Add)
        }

    residual = adds("Residual_With_BN")
    assert residual["block1_add"] == ["block1_conv2_bn", "conv1_relu"]
    assert residual["block2_add"] == ["block2_conv2_bn", "block2_proj_bn"]
    assert residual["block3_add"] == ["block2_relu", "block3_conv2_bn"]
    assert sorted(residual) == [f"block{b}_add" for b in range(1, 6)]
    inverted = adds("InvResidual_No_BN")
    assert sorted(inverted) == ["block1_add", "block3_add", "block5_add"]
    assert inverted["block3_add"] == ["block2_project", "block3_project"]


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
