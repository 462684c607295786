"""Uniform affine ("fake") quantization exactly as TensorFlow's FakeQuant ops do it.

A real range [min, max] is quantized onto the integers [quant_min, quant_max], where
quant_min = 1 if narrow_range else 0 and quant_max = 2**bits - 1. TensorFlow first "nudges"
the range so that real 0.0 is exactly representable (Nudge() in
tensorflow/core/kernels/fake_quant_ops_functor.h), all in float32:

    scale               = (max - min) / (quant_max - quant_min)
    inv_scale           = (quant_max - quant_min) / (max - min)
    zero_point_from_min = quant_min - min / scale
    nudged_zero_point   = quant_min if zero_point_from_min < quant_min
                          else quant_max if zero_point_from_min > quant_max
                          else round(zero_point_from_min)      (std::round: halves away from 0)
    nudged_min          = (quant_min - nudged_zero_point) * scale
    nudged_max          = (quant_max - nudged_zero_point) * scale

and then maps every x to the nearest grid point, halves rounding up:

    q   = floor((clamp(x, nudged_min, nudged_max) - nudged_min) / scale + 0.5)
    x_q = q * scale + nudged_min

Real 0 maps exactly to 0.0. TensorFlow evaluates x_q in the mathematically equal order
``floor((clamped - nudged_min) / scale - quant_zero + 0.5) * scale`` with
``quant_zero = floor(-nudged_min * inv_scale + 0.5)``; its per-channel kernel multiplies by
inv_scale instead of dividing by scale. `fake_quant_reference` follows the same order so that it
equals TensorFlow's FakeQuantWithMinMaxVars(PerChannel) bit for bit (tests/test_quantization.py
compares them). It is what the workflow quantizes with, without TensorFlow: kernels directly
(`fake_quantize_kernel`), activations inside the LiteRT engine, which computes the same
formula from `fake_quant_row` (quantinit.engine).

Quantization schemes are dicts ``{"bits": 8, "granularity": "per_tensor" | "per_channel",
"symmetric": bool}``; `weight_range` and `activation_range` turn observed (min, max) values into
the `QuantRange` that a scheme quantizes with.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from quantinit.folding import channel_axis
from quantinit.stats import channel_min_max

GRANULARITIES = ("per_tensor", "per_channel")
# Half-width of the range given to an all-zero tensor or channel (min == max == 0); any positive
# width quantizes 0 to exactly 0, and this one keeps scale a normal float32 for 2..16 bits.
DEGENERATE_HALF_WIDTH = 1e-8

_F32 = np.float32


class QuantRange(NamedTuple):
    """A quantization range in the argument order of `fake_quant_reference`:
    ``fake_quant_reference(x, *r)``.

    qmin_real and qmax_real are float32: scalars for per-tensor, 1-D per-channel arrays.
    """

    qmin_real: np.ndarray
    qmax_real: np.ndarray
    bits: int
    narrow_range: bool


def _quant_bounds(bits: int, narrow_range: bool) -> tuple[int, int]:
    """(quant_min, quant_max) = (1 if narrow_range else 0, 2**bits - 1), for 2 <= bits <= 16."""
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in 2..16 as for TensorFlow's FakeQuant ops, got {bits}")
    return (1 if narrow_range else 0), 2**bits - 1


def _float32_range(qmin_real, qmax_real) -> tuple[np.ndarray, np.ndarray]:
    """min and max as float32 arrays of one shape; ValueError unless min < max everywhere."""
    lo = np.asarray(qmin_real, dtype=_F32)
    hi = np.asarray(qmax_real, dtype=_F32)
    if lo.shape != hi.shape:
        raise ValueError(f"min has shape {lo.shape} but max has shape {hi.shape}")
    if not np.all(lo < hi):
        raise ValueError(f"quantization ranges need min < max, got min={lo}, max={hi}")
    return lo, hi


def _round_half_away_from_zero(x: np.ndarray) -> np.ndarray:
    """C's std::round, exactly: the nearest integer, halves away from zero (np.round: to even)."""
    truncated = np.trunc(x)
    return truncated + np.where(np.abs(x - truncated) >= 0.5, np.sign(x), 0).astype(x.dtype)


def _nudge(qmin_real, qmax_real, bits: int, narrow_range: bool) -> tuple[np.ndarray, ...]:
    """(nudged_min, nudged_max, scale, inv_scale) of TF's Nudge() in float32, elementwise."""
    lo, hi = _float32_range(qmin_real, qmax_real)
    quant_min, quant_max = (_F32(b) for b in _quant_bounds(bits, narrow_range))
    scale = (hi - lo) / (quant_max - quant_min)
    inv_scale = (quant_max - quant_min) / (hi - lo)
    zero_point_from_min = quant_min - lo / scale
    nudged_zero_point = np.clip(
        _round_half_away_from_zero(zero_point_from_min), quant_min, quant_max
    )
    nudged_min = (quant_min - nudged_zero_point) * scale
    nudged_max = (quant_max - nudged_zero_point) * scale
    return nudged_min, nudged_max, scale, inv_scale


def nudged_range(
    qmin_real, qmax_real, bits: int = 8, narrow_range: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nudged_min, nudged_max, scale) of TF's Nudge() (module docstring), float32, elementwise.

    Works on scalars or per-channel arrays; requires min < max.
    """
    nudged_min, nudged_max, scale, _ = _nudge(qmin_real, qmax_real, bits, narrow_range)
    return nudged_min, nudged_max, scale


def dequantization_step(qmin_real, qmax_real, bits: int = 8, narrow_range: bool = False):
    """The real value of one integer step: scale = (max - min) / (quant_max - quant_min)."""
    return nudged_range(qmin_real, qmax_real, bits, narrow_range)[2]


def _check_range_shape(x_shape: tuple, qmin: np.ndarray, channel_axis: int | None) -> None:
    """ValueError unless the range is a scalar (per-tensor) or has one entry per channel."""
    if channel_axis is None:
        expected = ()
    else:
        expected = (x_shape[channel_axis],)
    if qmin.shape != expected:
        raise ValueError(
            f"a range for a tensor of shape {x_shape} with channel_axis={channel_axis} "
            f"has shape {expected}, got {qmin.shape}"
        )


def fake_quant_reference(
    x,
    qmin_real,
    qmax_real,
    bits: int = 8,
    narrow_range: bool = False,
    channel_axis: int | None = None,
) -> np.ndarray:
    """NumPy re-implementation of TF's FakeQuantWithMinMaxVars(PerChannel), float32.

    Per-tensor when `channel_axis` is None (scalar min/max), otherwise per channel along
    `channel_axis` (min/max of length x.shape[channel_axis]). Formulas and TF's evaluation order
    in the module docstring; requires min < max (TF's special case min == max == 0, which
    outputs zeros, is not reproduced: `weight_range`/`activation_range` never produce it).
    """
    x = np.asarray(x, dtype=_F32)
    nudged_min, nudged_max, scale, inv_scale = _nudge(qmin_real, qmax_real, bits, narrow_range)
    _check_range_shape(x.shape, nudged_min, channel_axis)
    quant_zero = np.floor(-nudged_min * inv_scale + _F32(0.5))
    if channel_axis is not None:
        shape = [1] * x.ndim
        shape[channel_axis] = -1
        nudged_min, nudged_max, scale, inv_scale, quant_zero = (
            a.reshape(shape) for a in (nudged_min, nudged_max, scale, inv_scale, quant_zero)
        )
    shifted = np.clip(x, nudged_min, nudged_max) - nudged_min
    steps = shifted / scale if channel_axis is None else shifted * inv_scale
    return np.floor(steps - quant_zero + _F32(0.5)) * scale


def fake_quant_row(qrange: QuantRange) -> tuple[np.float32, ...]:
    """(nudged_min, nudged_max, scale, quant_zero, 1) of a per-tensor range, float32: the
    fake-quant row of quantinit.engine, which computes `fake_quant_reference` with it."""
    nudged_min, nudged_max, scale, inv_scale = _nudge(*qrange)
    if nudged_min.ndim:
        raise ValueError(f"a fake-quant row is per tensor, got ranges of shape {nudged_min.shape}")
    quant_zero = np.floor(-nudged_min * inv_scale + _F32(0.5))
    return nudged_min, nudged_max, scale, quant_zero, _F32(1.0)


def _parse_scheme(scheme: dict) -> tuple[int, bool, bool]:
    """(bits, per_channel, symmetric) of a scheme dict; ValueError on missing or bad entries."""
    missing = {"bits", "granularity", "symmetric"} - set(scheme)
    if missing:
        raise ValueError(f"quantization scheme {scheme} lacks {sorted(missing)}")
    if scheme["granularity"] not in GRANULARITIES:
        raise ValueError(
            f"granularity must be one of {GRANULARITIES}, got {scheme['granularity']!r}"
        )
    return int(scheme["bits"]), scheme["granularity"] == "per_channel", bool(scheme["symmetric"])


def activation_range(lo, hi, scheme: dict) -> QuantRange:
    """The QuantRange with which `scheme` quantizes values observed in [lo, hi].

    lo, hi: scalars for per-tensor schemes, 1-D per-channel arrays for per-channel ones.
    Asymmetric: [min(lo, 0), max(hi, 0)], so the range holds 0; narrow_range False.
    Symmetric: [-m, m] with m = max(|lo|, |hi|) and narrow_range True (as TFLite's int8
    weights), which keeps the nudged range symmetric (zero point in the middle of the grid).
    Degenerate all-zero ranges (min == max == 0 in float32) get the upper end
    DEGENERATE_HALF_WIDTH (asymmetric) or m = DEGENERATE_HALF_WIDTH (symmetric).
    """
    bits, per_channel, symmetric = _parse_scheme(scheme)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    if lo.ndim != int(per_channel) or lo.shape != hi.shape:
        granularity = scheme["granularity"]
        raise ValueError(
            f"a {granularity} range needs {'1-D' if per_channel else 'scalar'} lo and hi "
            f"of one shape, got {lo.shape} and {hi.shape}"
        )
    if symmetric:
        m = np.maximum(np.abs(lo), np.abs(hi)).astype(_F32)
        m = np.where(m == 0, _F32(DEGENERATE_HALF_WIDTH), m)
        qmin, qmax = -m, m
    else:
        qmin = np.minimum(lo, 0.0).astype(_F32)
        qmax = np.maximum(hi, 0.0).astype(_F32)
        qmax = np.where(qmax == qmin, _F32(DEGENERATE_HALF_WIDTH), qmax)
    return QuantRange(qmin, qmax, bits, symmetric)


def weight_range(w, scheme: dict, channel_axis: int = -1) -> QuantRange:
    """The QuantRange with which `scheme` quantizes the weight tensor `w`.

    Per-tensor: from w's overall (min, max); per-channel: from the (min, max) of each slice
    along `channel_axis` (use folding.channel_axis(kind): 2 for depthwise kernels). The range
    rules are `activation_range`'s.
    """
    w = np.asarray(w)
    if _parse_scheme(scheme)[1]:
        lo, hi = channel_min_max(w, channel_axis)
    else:
        lo, hi = w.min(), w.max()
    return activation_range(lo, hi, scheme)


def fake_quantize_kernel(kernel, kind: str, scheme: dict) -> tuple[np.ndarray, QuantRange]:
    """(fake-quantized kernel, its QuantRange) of a kernel layer of `kind` under `scheme`:
    per tensor, or per output channel (folding.channel_axis) for per-channel schemes."""
    axis = channel_axis(kind)
    qrange = weight_range(kernel, scheme, axis)
    per_channel = scheme["granularity"] == "per_channel"
    return fake_quant_reference(kernel, *qrange, channel_axis=axis if per_channel else None), qrange
