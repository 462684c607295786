"""Layerwise statistics and evaluation metrics against hand-computed values."""

import math

import numpy as np
import pytest

from quantinit.stats import (
    average_channel_precision,
    channel_min_max,
    channel_ranges,
    clipped_activation_stats,
    clipped_channel_precision,
    fans,
    kl_to_uniform,
    percent_accuracy_decrease,
    percentile_range,
    qce,
    qmse,
    softmax,
    tensor_range,
)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((3, 3, 16, 32), (3 * 3 * 16, 3 * 3 * 32)),  # conv: K*K*in, K*K*out
        ((1, 1, 64, 128), (64, 128)),  # pointwise
        ((3, 3, 32, 1), (3 * 3 * 32, 3 * 3)),  # depthwise, depth_multiplier 1
        ((512, 10), (512, 10)),  # dense
        ((7,), (7, 7)),
        ((), (1, 1)),
    ],
)
def test_fans_by_hand(shape, expected):
    assert fans(shape) == expected


def test_ranges_by_hand():
    # channels along axis 1: channel 0 holds {0, 1} (range 1), channel 1 holds {-2, 2} (range 4).
    x = np.array([[0.0, -2.0], [1.0, 2.0]])
    assert tensor_range(x) == (-2.0, 2.0)
    lo, hi = channel_min_max(x, 1)
    np.testing.assert_array_equal(lo, [0.0, -2.0])
    np.testing.assert_array_equal(hi, [1.0, 2.0])
    np.testing.assert_array_equal(channel_ranges(x, 1), [1.0, 4.0])
    np.testing.assert_array_equal(channel_ranges(x, 0), [2.0, 1.0])  # rows [0, -2], [1, 2]
    # Eq. 2: (1/4 + 4/4) / 2
    assert average_channel_precision(x, 1) == pytest.approx((0.25 + 1.0) / 2)
    assert average_channel_precision(x, -1) == pytest.approx(0.625)


def test_channel_precision_of_4d_tensor_reduces_over_other_axes():
    x = np.zeros((2, 3, 3, 2))
    x[1, 2, 0, 0] = 8.0  # channel 0 (last axis) spans [0, 8]
    x[0, 0, 1, 1] = -2.0  # channel 1 spans [-2, 0]; the tensor spans [-2, 8]
    np.testing.assert_array_equal(channel_ranges(x, -1), [8.0, 2.0])
    assert average_channel_precision(x, -1) == pytest.approx((0.8 + 0.2) / 2)


@pytest.mark.parametrize("bounds", [(0.3, 2.0), (-5.0, 5.0), (1.0, 1.0), (-1.0, 0.5)])
def test_clipped_channel_precision_equals_precision_of_the_clipped_tensor(bounds):
    x = np.random.default_rng(3).normal(size=(6, 5, 5, 7)).astype("float32")
    x[..., 2] *= 4.0
    lo, hi = bounds
    expected = average_channel_precision(np.clip(x, lo, hi), -1)
    got = clipped_channel_precision(x.min(axis=(0, 1, 2)), x.max(axis=(0, 1, 2)), lo, hi)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-6)


def test_constant_tensor_precision_is_nan():
    assert math.isnan(average_channel_precision(np.full((3, 4), 2.5), -1))


def test_percentile_range_by_hand():
    assert percentile_range(np.arange(101), 1.0) == (1.0, 99.0)
    assert percentile_range(np.arange(101).reshape(1, 101), 0.0) == (0.0, 100.0)
    assert percentile_range(np.arange(11), 5.0) == (0.5, 9.5)  # linear interpolation
    with pytest.raises(ValueError, match="percentile"):
        percentile_range(np.arange(5), 60.0)


def test_clipped_activation_stats_by_hand():
    # channel 0 (last axis) holds 0..100, channel 1 holds 0..50: 202 values in all, so the
    # 1st and 99th percentiles lie at ranks 2.01 and 198.99 of the sorted values.
    x = np.stack([np.arange(101.0), np.arange(101.0) / 2], axis=-1)
    ordered = np.sort(x.reshape(-1))
    lo = ordered[2] + 0.01 * (ordered[3] - ordered[2])
    hi = ordered[198] + 0.99 * (ordered[199] - ordered[198])
    stats = clipped_activation_stats(x, 1.0)
    assert (stats["min"], stats["max"], stats["range"]) == (0.0, 100.0, 100.0)
    assert stats["clip_lo"] == pytest.approx(lo)
    assert stats["clip_hi"] == pytest.approx(hi)
    assert stats["clipped_range"] == pytest.approx(hi - lo)
    np.testing.assert_allclose(stats["channel_ranges"], [hi - lo, 50.0 - lo])
    expected_precision = (1.0 + (50.0 - lo) / (hi - lo)) / 2
    assert stats["average_precision"] == pytest.approx(expected_precision)


def test_kl_uniform_samples_near_zero():
    x = np.random.default_rng(0).uniform(-1.0, 1.0, 200_000)
    # 64 bins of ~3125 samples: the multinomial noise gives KL ~ (bins - 1) / (2 n) = 1.6e-4
    assert 0 <= kl_to_uniform(x, -1.0, 1.0, 64) < 1e-3


def test_kl_exact_grid_is_zero():
    x = np.arange(10) + 0.5  # one value in the middle of each of 10 unit bins on [0, 10]
    assert kl_to_uniform(x, 0.0, 10.0, 10) == pytest.approx(0.0, abs=1e-12)


def test_kl_constant_tensor_is_log_bins():
    assert kl_to_uniform(np.full(50, 0.3), 0.0, 1.0, 32) == pytest.approx(math.log(32))
    assert kl_to_uniform(np.full(50, 0.3), 0.3, 0.3, 16) == pytest.approx(math.log(16))


def test_kl_two_bins_by_hand():
    # 3 of 4 values in bin [0, 1), 1 in [1, 2]: p = (3/4, 1/4), U = (1/2, 1/2).
    x = np.array([0.1, 0.2, 0.7, 1.5])
    expected = 0.75 * math.log(0.75 * 2) + 0.25 * math.log(0.25 * 2)
    assert kl_to_uniform(x, 0.0, 2.0, 2) == pytest.approx(expected)
    # values outside [lo, hi] are clipped into the end bins
    assert kl_to_uniform(x - 5.0 * (x < 0.5), 0.0, 2.0, 2) == pytest.approx(expected)


def test_kl_of_a_non_finite_tensor_is_nan():
    x = np.array([0.1, np.nan, 0.7])
    assert math.isnan(kl_to_uniform(x, float(np.min(x)), float(np.max(x)), 16))
    assert math.isnan(kl_to_uniform(np.array([1.0, np.inf]), 1.0, math.inf, 16))


def test_softmax_by_hand_and_stable():
    p = softmax(np.array([[0.0, math.log(3.0)], [1000.0, 1000.0]]))
    np.testing.assert_allclose(p, [[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_allclose(
        softmax(np.array([[1.0], [2.0]]), axis=0).ravel(), [1 / (1 + math.e), math.e / (1 + math.e)]
    )


def test_qce_of_identical_outputs_is_entropy():
    p = np.array([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]])
    entropies = [-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)), 0.0]
    assert qce(p, p) == pytest.approx(np.mean(entropies))


def test_qce_against_uniform_is_ln10_for_any_reference():
    p_ref = np.random.default_rng(3).dirichlet(np.ones(10), size=7)
    assert qce(p_ref, np.full((7, 10), 0.1)) == pytest.approx(2.302585, abs=1e-6)


def test_qce_clips_zero_probabilities_at_eps():
    # all reference mass on a class the quantized network gives probability 0: -log(eps)
    assert qce([[1.0, 0.0]], [[0.0, 1.0]]) == pytest.approx(-math.log(1e-7))
    assert qce([[1.0, 0.0]], [[0.0, 1.0]], eps=1e-3) == pytest.approx(-math.log(1e-3))


def test_qmse_by_hand():
    p_ref = [[0.5, 0.5], [1.0, 0.0]]
    p_q = [[0.25, 0.75], [1.0, 0.0]]
    assert qmse(p_ref, p_q) == pytest.approx((0.0625 + 0.0625 + 0 + 0) / 4)
    with pytest.raises(ValueError, match="one shape"):
        qmse(p_ref, [[0.5, 0.5]])


def test_percent_accuracy_decrease_by_hand():
    assert percent_accuracy_decrease(0.8, 0.6) == pytest.approx(25.0)
    assert percent_accuracy_decrease(0.5, 0.55) == pytest.approx(-10.0)
    assert math.isnan(percent_accuracy_decrease(0.0, 0.1))
