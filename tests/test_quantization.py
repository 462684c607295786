"""Fake quantization: TF's op vs the NumPy reference the workflow quantizes with, and both
against hand-computed grids."""

import numpy as np
import pytest
import tensorflow as tf

from quantinit.quantization import (
    DEGENERATE_HALF_WIDTH,
    activation_range,
    dequantization_step,
    fake_quant_reference,
    fake_quantize_kernel,
    nudged_range,
    weight_range,
)


def fake_quantize(x, qmin_real, qmax_real, bits=8, narrow_range=False, channel_axis=None):
    """TensorFlow's FakeQuantWithMinMaxVars(PerChannel), the oracle: the per-channel op
    quantizes along the last axis, so `channel_axis` is moved last and back."""
    lo, hi = np.float32(qmin_real), np.float32(qmax_real)
    tensor = tf.convert_to_tensor(x, dtype=tf.float32)
    options = {"num_bits": bits, "narrow_range": narrow_range}
    if channel_axis is None:
        return tf.quantization.fake_quant_with_min_max_vars(tensor, lo, hi, **options).numpy()
    axis = channel_axis % tensor.shape.rank
    perm = [a for a in range(tensor.shape.rank) if a != axis] + [axis]
    moved = tf.transpose(tensor, perm)
    out = tf.quantization.fake_quant_with_min_max_vars_per_channel(moved, lo, hi, **options)
    return tf.transpose(out, np.argsort(perm)).numpy()


PER_TENSOR_8 = {"bits": 8, "granularity": "per_tensor", "symmetric": False}
PER_CHANNEL_SYM_8 = {"bits": 8, "granularity": "per_channel", "symmetric": True}

# [-0.37, 2.91] at 8 bits, by hand: scale = 3.28 / 255, zero_point_from_min = 0.37 / scale
# = 28.77 -> 29, so the nudged range is [-29 * scale, 226 * scale].
AWKWARD = (-0.37, 2.91)
AWKWARD_SCALE = 3.28 / 255
AWKWARD_NUDGED = (-29 * AWKWARD_SCALE, 226 * AWKWARD_SCALE)


@pytest.mark.parametrize(
    ("qmin", "qmax", "bits", "narrow", "expected"),
    [
        (0.0, 2.55, 8, False, (0.0, 2.55, 0.01)),
        (*AWKWARD, 8, False, (*AWKWARD_NUDGED, AWKWARD_SCALE)),
        # 2 bits -> grid 0..3, scale 1. zero_point_from_min 0.5 rounds away from zero to 1
        # (np.round would give 0), 0.4 rounds to 0.
        (-0.5, 2.5, 2, False, (-1.0, 2.0, 1.0)),
        (-0.4, 2.6, 2, False, (0.0, 3.0, 1.0)),
        # narrow range: grid 1..3, scale 2 / 2 = 1, zero point 1 + 1 = 2.
        (-1.0, 1.0, 2, True, (-1.0, 1.0, 1.0)),
        # ranges without 0: the zero point clamps to the grid end, so the range moves to hold 0.
        (1.0, 4.0, 2, False, (0.0, 3.0, 1.0)),
        (-4.0, -1.0, 2, False, (-3.0, 0.0, 1.0)),
    ],
)
def test_nudged_range_by_hand(qmin, qmax, bits, narrow, expected):
    got = nudged_range(qmin, qmax, bits, narrow)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_nudged_range_is_elementwise():
    lo, hi = np.array([0.0, -0.37, -0.5]), np.array([2.55, 2.91, 2.5])
    vector = nudged_range(lo, hi, 8)
    scalars = np.array([nudged_range(a, b, 8) for a, b in zip(lo, hi, strict=True)]).T
    np.testing.assert_array_equal(np.array(vector), scalars)


def test_dequantization_step_by_hand():
    np.testing.assert_allclose(dequantization_step(0.0, 2.55, 8), 0.01, rtol=1e-6)
    np.testing.assert_allclose(dequantization_step(-1.27, 1.27, 8, narrow_range=True), 0.01)
    np.testing.assert_allclose(dequantization_step(0.0, 1.5, 4), 0.1, rtol=1e-6)


def _test_tensor(rng, shape, lo, hi):
    """Uniform values reaching 50 % beyond [lo, hi], with exact zeros and the range ends."""
    span = np.max(hi) - np.min(lo)
    x = rng.uniform(np.min(lo) - span / 2, np.max(hi) + span / 2, size=shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[:3] = [0.0, np.min(lo), np.max(hi)]
    return x


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("narrow", [False, True])
def test_tf_op_equals_reference_per_tensor(bits, narrow):
    x = _test_tensor(np.random.default_rng(bits), (32, 6, 6, 5), *AWKWARD)
    np.testing.assert_array_equal(
        fake_quantize(x, *AWKWARD, bits, narrow), fake_quant_reference(x, *AWKWARD, bits, narrow)
    )


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("axis", [0, 2, -1])
def test_tf_op_equals_reference_per_channel(bits, narrow, axis):
    rng = np.random.default_rng(10 * bits + axis)
    shape = (3, 4, 5, 6)
    lo = -rng.uniform(0.01, 1.0, shape[axis])
    hi = rng.uniform(0.01, 3.0, shape[axis])
    lo[0], hi[0] = AWKWARD
    x = _test_tensor(rng, shape, lo, hi)
    got = fake_quantize(x, lo, hi, bits, narrow, channel_axis=axis)
    expected = fake_quant_reference(x, lo, hi, bits, narrow, channel_axis=axis)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("quantize", [fake_quantize, fake_quant_reference])
@pytest.mark.parametrize(("qmin", "qmax"), [AWKWARD, (-1e-3, 7.7), (-5.1, 0.3), (0.0, 1.0)])
def test_zero_is_exact(quantize, qmin, qmax):
    x = np.zeros(4, dtype=np.float32)
    assert np.all(quantize(x, qmin, qmax, 8) == 0.0)
    assert np.all(quantize(x, qmin, qmax, 4, True) == 0.0)


@pytest.mark.parametrize("quantize", [fake_quantize, fake_quant_reference])
def test_out_of_range_clamps_to_nudged_ends(quantize):
    x = np.array([-100.0, -0.38, 2.92, 100.0], dtype=np.float32)
    got = quantize(x, *AWKWARD, 8)
    expected = [AWKWARD_NUDGED[0]] * 2 + [AWKWARD_NUDGED[1]] * 2
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize(("bits", "narrow"), [(4, False), (4, True), (8, False), (8, True)])
def test_outputs_lie_on_the_grid(bits, narrow):
    x = np.linspace(-1.0, 4.0, 20001, dtype=np.float32)
    out = fake_quantize(x, *AWKWARD, bits, narrow)
    levels = np.unique(out)
    n_levels = 2**bits - int(narrow)
    assert len(levels) == n_levels  # the dense sweep hits every level, and no more
    scale = 3.28 / (n_levels - 1)
    steps = levels / scale  # levels are integer multiples of the step, since 0 is a level
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)


def test_hand_grid_step_001():
    # [0, 2.55] at 8 bits is the grid 0, 0.01, ..., 2.55 (zero point 0).
    x = np.array([-1.0, 0.0, 0.004, 0.016, 1.234, 2.549, 3.0], dtype=np.float32)
    expected = [0.0, 0.0, 0.0, 0.02, 1.23, 2.55, 2.55]
    np.testing.assert_allclose(fake_quantize(x, 0.0, 2.55), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fake_quant_reference(x, 0.0, 2.55), expected, rtol=1e-6, atol=1e-7)


def test_halves_round_up_by_hand():
    # [-0.5, 2.5] at 2 bits nudges to the grid -1, 0, 1, 2; ties go up: -0.5 -> 0, 1.5 -> 2.
    x = np.array([-0.5, 2.5, -3.0, 0.49, 1.5], dtype=np.float32)
    np.testing.assert_array_equal(fake_quantize(x, -0.5, 2.5, 2), [0.0, 2.0, -1.0, 0.0, 2.0])


def test_per_channel_by_hand():
    # channel 0 (row): [0, 2.55] -> step 0.01; channel 1: [0, 25.5] -> step 0.1.
    x = np.array([[0.123, 1.0, 9.0], [0.123, 1.0, 9.0]], dtype=np.float32)
    expected = [[0.12, 1.0, 2.55], [0.1, 1.0, 9.0]]
    for quantize in (fake_quantize, fake_quant_reference):
        got = quantize(x, [0.0, 0.0], [2.55, 25.5], channel_axis=0)
        np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("kind", ["conv", "depthwise", "dense"])
@pytest.mark.parametrize("scheme", [PER_TENSOR_8, PER_CHANNEL_SYM_8])
def test_kernels_are_quantized_as_tensorflow_quantizes_them(kind, scheme):
    shape = {"conv": (3, 3, 4, 5), "depthwise": (3, 3, 6, 1), "dense": (7, 3)}[kind]
    w = np.random.default_rng(4).normal(0, 0.3, shape).astype(np.float32)
    got, qrange = fake_quantize_kernel(w, kind, scheme)
    axis = 2 if kind == "depthwise" else -1
    per_channel = scheme["granularity"] == "per_channel"
    for got_part, expected_part in zip(qrange, weight_range(w, scheme, axis), strict=True):
        np.testing.assert_array_equal(got_part, expected_part)
    expected = fake_quantize(w, *qrange, channel_axis=axis if per_channel else None)
    np.testing.assert_array_equal(got, expected)


def test_invalid_ranges_raise():
    x = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="min < max"):
        fake_quant_reference(x, 1.0, 1.0)
    with pytest.raises(ValueError, match="channel_axis=1"):
        fake_quant_reference(x, [-1.0, -1.0], [1.0, 1.0], channel_axis=1)
    with pytest.raises(ValueError, match="bits"):
        nudged_range(-1.0, 1.0, bits=1)


def test_asymmetric_range_includes_zero():
    w = np.array([[0.5, 3.0], [1.0, 2.0]])
    r = weight_range(w, PER_TENSOR_8)
    assert (float(r.qmin_real), float(r.qmax_real), r.bits, r.narrow_range) == (0.0, 3.0, 8, False)
    r = activation_range(-2.0, -1.0, PER_TENSOR_8)
    assert (float(r.qmin_real), float(r.qmax_real)) == (-2.0, 0.0)


def test_symmetric_per_channel_depthwise_range():
    # depthwise kernel (1, 1, 3, 1): channel c is axis 2.
    w = np.array([0.5, -3.0, 2.0]).reshape(1, 1, 3, 1)
    w = np.concatenate([w, -w])  # (2, 1, 3, 1): channel c holds +-m_c, m = 0.5, 3, 2
    r = weight_range(w, PER_CHANNEL_SYM_8, channel_axis=2)
    np.testing.assert_array_equal(r.qmax_real, np.float32([0.5, 3.0, 2.0]))
    np.testing.assert_array_equal(r.qmin_real, -r.qmax_real)
    assert r.narrow_range
    nudged_min, nudged_max, _ = nudged_range(*r)
    np.testing.assert_array_equal(nudged_min, -nudged_max)  # narrow range keeps symmetry
    out = fake_quantize(w, *r, channel_axis=2)
    np.testing.assert_allclose(out, w, rtol=1e-6)  # both ends of each channel are levels


def test_degenerate_all_zero_ranges_quantize_zeros():
    zeros = np.zeros((3, 3, 2, 1), dtype=np.float32)
    for symmetric in (False, True):
        r = weight_range(zeros, {**PER_TENSOR_8, "symmetric": symmetric})
        assert r.qmin_real < 0 if symmetric else r.qmin_real == 0
        assert r.qmax_real == np.float32(DEGENERATE_HALF_WIDTH)
        assert np.all(fake_quantize(zeros, *r) == 0)
    # per channel: only the all-zero channels get the degenerate range
    w = np.zeros((3, 3, 2, 4), dtype=np.float32)
    w[..., 1] = np.linspace(-1.0, 1.0, 18).reshape(3, 3, 2)
    r = weight_range(w, PER_CHANNEL_SYM_8)
    np.testing.assert_array_equal(r.qmax_real, np.float32([1e-8, 1.0, 1e-8, 1e-8]))
    out = fake_quantize(w, *r, channel_axis=-1)
    assert np.all(out[..., [0, 2, 3]] == 0)
    np.testing.assert_allclose(out[..., 1], w[..., 1], atol=1 / 127 / 2 + 1e-7)


def test_bad_schemes_raise():
    with pytest.raises(ValueError, match="granularity"):
        activation_range(0.0, 1.0, {**PER_TENSOR_8, "granularity": "per_layer"})
    with pytest.raises(ValueError, match="lacks"):
        activation_range(0.0, 1.0, {"bits": 8})
    with pytest.raises(ValueError, match="scalar"):
        activation_range([0.0, 0.0], [1.0, 2.0], PER_TENSOR_8)
