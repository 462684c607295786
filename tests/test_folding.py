"""BatchNorm folding (paper Eq. 3) against hand numbers and against Keras' own BatchNorm."""

import re

import numpy as np
import pytest

from quantinit.folding import channel_axis, fold_batchnorm


def test_channel_axis_per_kind():
    assert [channel_axis(k) for k in ("conv", "pointwise", "dense", "depthwise")] == [-1, -1, -1, 2]
    with pytest.raises(ValueError, match="unknown layer kind"):
        channel_axis("separable")


def test_pointwise_two_channels_by_hand():
    # 1x1 conv, 1 input channel, 2 output channels: w = [2, -1], b = [1, 0].
    # Channel 0: gamma 3, var 3.99 + eps 0.01 -> sqrt 2 -> s = 1.5, mean 1, beta 0.5:
    #   w_fold = 3, b_fold = 0.5 + (1 - 1) * 1.5 = 0.5.
    # Channel 1: gamma 1, var 0.24 + 0.01 -> sqrt 0.5 -> s = 2, mean -2, beta -1:
    #   w_fold = -2, b_fold = -1 + (0 + 2) * 2 = 3.
    kernel = np.array([2.0, -1.0]).reshape(1, 1, 1, 2)
    w, b = fold_batchnorm(
        kernel,
        np.array([1.0, 0.0]),
        gamma=np.array([3.0, 1.0]),
        beta=np.array([0.5, -1.0]),
        moving_mean=np.array([1.0, -2.0]),
        moving_var=np.array([3.99, 0.24]),
        epsilon=0.01,
        kind="pointwise",
    )
    assert w.dtype == np.float32 and b.dtype == np.float32
    np.testing.assert_allclose(w.reshape(-1), [3.0, -2.0], rtol=1e-6)
    np.testing.assert_allclose(b, [0.5, 3.0], rtol=1e-6)


def test_no_bias_means_zero_bias():
    # dense (1, 1): s = 2 / sqrt(1 + 0) = 2; b_fold = 0.25 + (0 - 3) * 2 = -5.75.
    w, b = fold_batchnorm(np.array([[4.0]]), None, [2.0], [0.25], [3.0], [1.0], 0.0, "dense")
    np.testing.assert_allclose(w, [[8.0]])
    np.testing.assert_allclose(b, [-5.75])


def test_conv_scales_output_channels_only():
    # Every weight feeding output channel c is multiplied by s_c, whatever its input channel.
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 3, 2, 4))
    gamma, var = np.array([1.0, 2.0, -0.5, 0.1]), np.array([1.0, 4.0, 0.25, 0.01])
    w, _ = fold_batchnorm(kernel, None, gamma, np.zeros(4), np.zeros(4), var, 0.0, "conv")
    s = np.array([1.0, 1.0, -1.0, 1.0])  # gamma / sqrt(var)
    np.testing.assert_allclose(w, kernel * s, rtol=1e-6)


def test_depthwise_scales_input_channels():
    # (K, K, in=2, 1): channel 0 scaled by 2 / sqrt(4) = 1, channel 1 by 3 / sqrt(1) = 3.
    kernel = np.arange(8.0).reshape(2, 2, 2, 1)
    w, b = fold_batchnorm(
        kernel, [1.0, 1.0], [2.0, 3.0], [0.0, 0.0], [0.0, 2.0], [4.0, 1.0], 0.0, "depthwise"
    )
    expected = kernel.copy()
    expected[:, :, 1, :] *= 3.0
    np.testing.assert_allclose(w, expected)
    np.testing.assert_allclose(b, [1.0, (1.0 - 2.0) * 3.0])


@pytest.mark.parametrize(
    ("kernel_shape", "kind", "n_bn"),
    [((3, 3, 2, 4), "conv", 3), ((3, 3, 2, 1), "depthwise", 4), ((5, 4), "dense", 5)],
)
def test_length_mismatch_names_shapes(kernel_shape, kind, n_bn):
    ones = np.ones(n_bn)
    expected = re.escape(f"gamma has shape {(n_bn,)}") + ".*" + re.escape(str(kernel_shape))
    with pytest.raises(ValueError, match=expected):
        fold_batchnorm(np.ones(kernel_shape), None, ones, ones, ones, ones, 1e-3, kind)


def test_depthwise_multiplier_must_be_one():
    ones = np.ones(2)
    with pytest.raises(ValueError, match="depth_multiplier 1"):
        fold_batchnorm(np.ones((3, 3, 2, 2)), None, ones, ones, ones, ones, 1e-3, "depthwise")


def _random_bn_weights(rng, n):
    """gamma (both signs, |gamma| in [0.5, 2]), beta, moving_mean, moving_var in [0.1, 3]."""
    gamma = rng.uniform(0.5, 2.0, n) * rng.choice([-1.0, 1.0], n)
    return [gamma, rng.normal(size=n), rng.normal(size=n), rng.uniform(0.1, 3.0, n)]


@pytest.mark.parametrize(
    ("kind", "make_layer", "input_shape"),
    [
        ("conv", lambda keras, **kw: keras.layers.Conv2D(4, 3, **kw), (2, 7, 7, 3)),
        ("pointwise", lambda keras, **kw: keras.layers.Conv2D(5, 1, **kw), (2, 6, 6, 3)),
        ("depthwise", lambda keras, **kw: keras.layers.DepthwiseConv2D(3, **kw), (2, 7, 7, 3)),
        ("dense", lambda keras, **kw: keras.layers.Dense(6, **kw), (4, 9)),
    ],
)
@pytest.mark.parametrize("use_bias", [False, True])
def test_folded_layer_matches_keras_layer_then_batchnorm(kind, make_layer, input_shape, use_bias):
    """A layer built from the folded weights reproduces layer -> BatchNormalization(inference).

    Tolerance: float32 arithmetic in both paths, atol = 1e-5 * max |reference output|.
    """
    import keras

    rng = np.random.default_rng(42)
    x = rng.normal(size=input_shape).astype(np.float32)
    layer = make_layer(keras, use_bias=use_bias)
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    reference_model = keras.Sequential([keras.Input(input_shape[1:]), layer, bn])
    n_channels = bn.get_weights()[0].shape[0]
    bn.set_weights(_random_bn_weights(rng, n_channels))
    if use_bias:
        layer.set_weights([layer.get_weights()[0], rng.normal(size=n_channels)])
    reference = reference_model(x, training=False).numpy()

    kernel = layer.get_weights()[0]
    bias = layer.get_weights()[1] if use_bias else None
    w_fold, b_fold = fold_batchnorm(kernel, bias, *bn.get_weights(), bn.epsilon, kind)
    folded_layer = make_layer(keras, use_bias=True)
    folded_model = keras.Sequential([keras.Input(input_shape[1:]), folded_layer])
    folded_layer.set_weights([w_fold, b_fold])
    folded = folded_model(x, training=False).numpy()

    assert np.abs(reference).max() > 1.0  # the BN statistics are far from the identity
    np.testing.assert_allclose(folded, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
