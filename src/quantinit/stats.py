"""The paper's layerwise statistics (Eqs. 1-2, percentile clipping, KL to uniform) and the
evaluation metrics of its Table 2 (QMSE, QCE, percent accuracy decrease). NumPy only.

Conventions: a "range" is max - min; "channels" are the slices of a tensor along
`channel_axis`, reduced over every other axis; logarithms are natural (nats).
"""

from __future__ import annotations

import math

import numpy as np


def fans(kernel_shape) -> tuple[int, int]:
    """(fan_in, fan_out) as Keras' compute_fans, which is the paper's Eq. 1.

    Dense (in, out): (in, out). Convolutions (..., in, out) with receptive field
    R = product of the leading (spatial) dims: (R * in, R * out), so a (K, K, in, out) conv
    gives (K*K*in, K*K*out) and a (K, K, in, 1) depthwise kernel (K*K*in, K*K).
    Shape () gives (1, 1) and (n,) gives (n, n), as in Keras.
    """
    shape = tuple(int(d) for d in kernel_shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = int(np.prod(shape[:-2]))
    return receptive_field * shape[-2], receptive_field * shape[-1]


def tensor_range(x) -> tuple[float, float]:
    """(min, max) over all values of x."""
    x = np.asarray(x)
    return float(x.min()), float(x.max())


def percentile_range(x, percentile: float) -> tuple[float, float]:
    """Symmetric percentile clipping bounds: (np.percentile(x, p), np.percentile(x, 100 - p)).

    p is in percent (1.0 clips the top and bottom 1 %), 0 <= p <= 50, over all values of x,
    with NumPy's default linear interpolation; p = 0 gives (min, max).
    """
    if not 0 <= percentile <= 50:
        raise ValueError(f"percentile must be in [0, 50], got {percentile}")
    lo, hi = np.percentile(np.asarray(x), [percentile, 100 - percentile])
    return float(lo), float(hi)


def channel_min_max(x, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (min, max): 1-D arrays over the slices of x along `channel_axis`."""
    x = np.asarray(x)
    axis = channel_axis % x.ndim
    others = tuple(a for a in range(x.ndim) if a != axis)
    return x.min(axis=others), x.max(axis=others)


def channel_ranges(x, channel_axis: int) -> np.ndarray:
    """Per-channel range max - min over all axes except `channel_axis`."""
    lo, hi = channel_min_max(x, channel_axis)
    return hi - lo


def precision_from_channel_extremes(channel_min, channel_max) -> float:
    """The paper's Eq. 2 from per-channel minima and maxima: mean over the K channels of
    range_i / range_tensor, where range_tensor = max(channel_max) - min(channel_min).

    Each ratio lies in [0, 1]. A constant tensor (range_tensor == 0) has no defined
    precision: nan.
    """
    channel_min, channel_max = np.asarray(channel_min), np.asarray(channel_max)
    lo, hi = float(channel_min.min()), float(channel_max.max())
    if hi == lo:
        return float("nan")
    return float(np.mean((channel_max - channel_min) / (hi - lo)))


def average_channel_precision(x, channel_axis: int) -> float:
    """The paper's Eq. 2 of tensor x with channels along `channel_axis`."""
    return precision_from_channel_extremes(*channel_min_max(x, channel_axis))


def clipped_channel_precision(channel_min, channel_max, lo: float, hi: float) -> float:
    """Eq. 2 of a tensor clipped to [lo, hi], from its unclipped per-channel minima and maxima.

    Clipping is monotone, so a clipped channel's extremes are the clipped extremes: this
    equals average_channel_precision(np.clip(x, lo, hi), axis) without building the clipped
    tensor.
    """
    return precision_from_channel_extremes(
        np.clip(np.asarray(channel_min), lo, hi), np.clip(np.asarray(channel_max), lo, hi)
    )


def clipped_activation_stats(x, percentile: float, channel_axis: int = -1) -> dict:
    """Range statistics of an activation tensor before and after symmetric percentile clipping.

    Keys: min, max, range (of x); clip_lo, clip_hi (`percentile_range`), clipped_range
    (clip_hi - clip_lo); channel_ranges (np.ndarray, per channel of np.clip(x, clip_lo, clip_hi))
    and average_precision (Eq. 2 of the clipped tensor).
    """
    x = np.asarray(x)
    x_min, x_max = tensor_range(x)
    clip_lo, clip_hi = percentile_range(x, percentile)
    clipped = np.clip(x, clip_lo, clip_hi)
    return {
        "min": x_min,
        "max": x_max,
        "range": x_max - x_min,
        "clip_lo": clip_lo,
        "clip_hi": clip_hi,
        "clipped_range": clip_hi - clip_lo,
        "channel_ranges": channel_ranges(clipped, channel_axis),
        "average_precision": average_channel_precision(clipped, channel_axis),
    }


def kl_to_uniform(x, lo: float, hi: float, bins: int) -> float:
    """KL(P || U) in nats between x's histogram P and the uniform U over the same bins.

    P: np.histogram of np.clip(x, lo, hi) with `bins` equal bins on [lo, hi], normalised;
    U_i = 1 / bins. KL = sum_i p_i log(p_i * bins) with 0 log 0 = 0: 0 for a perfectly uniform
    histogram, log(bins) when all mass is in one bin. For lo == hi NumPy widens the histogram
    range to [lo - 0.5, hi + 0.5]. NaN when lo or hi is not finite (a tensor holding NaN or
    infinite values has no histogram).
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return math.nan
    if bins < 1 or lo > hi:
        raise ValueError(f"need bins >= 1 and lo <= hi, got bins={bins}, lo={lo}, hi={hi}")
    counts, _ = np.histogram(np.clip(np.asarray(x), lo, hi), bins=bins, range=(lo, hi))
    p = counts[counts > 0] / counts.sum()
    return float(np.sum(p * np.log(p * bins)))


def softmax(logits, axis: int = -1) -> np.ndarray:
    """exp(z - max z) / sum exp(z - max z) along `axis` (shifted by the max for stability)."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _check_same_shape(p_ref: np.ndarray, p_q: np.ndarray) -> None:
    """ValueError unless both are (images, classes) arrays of one shape."""
    if p_ref.shape != p_q.shape or p_ref.ndim != 2:
        raise ValueError(
            f"need two (images, classes) arrays of one shape, got {p_ref.shape} and {p_q.shape}"
        )


def qmse(p_ref, p_q) -> float:
    """Quantized MSE: mean over images and classes of (p_ref - p_q)**2."""
    p_ref, p_q = np.asarray(p_ref, dtype=np.float64), np.asarray(p_q, dtype=np.float64)
    _check_same_shape(p_ref, p_q)
    return float(np.mean((p_ref - p_q) ** 2))


def qce(p_ref, p_q, eps: float = 1e-7) -> float:
    """Quantized cross-entropy in nats: mean over images of -sum_k p_ref_k log(clip(p_q_k, eps, 1)).

    p_ref: fp32 network probabilities (the target), p_q: dequantized quantized-network ones.
    Clipping at eps (1e-7, Keras' default epsilon) keeps a zero probability finite:
    it contributes at most -log(eps) = 16.1 nats per unit of reference mass.
    """
    p_ref, p_q = np.asarray(p_ref, dtype=np.float64), np.asarray(p_q, dtype=np.float64)
    _check_same_shape(p_ref, p_q)
    return float(np.mean(-np.sum(p_ref * np.log(np.clip(p_q, eps, 1.0)), axis=1)))


def percent_accuracy_decrease(acc_fp32: float, acc_q: float) -> float:
    """100 * (acc_fp32 - acc_q) / acc_fp32; nan when acc_fp32 == 0."""
    if acc_fp32 == 0:
        return float("nan")
    return 100.0 * (acc_fp32 - acc_q) / acc_fp32
