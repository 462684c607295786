"""The rows of the per-cell tables, built from numpy arrays (no TensorFlow here); their
schemas and files are quantinit.cellfiles'."""

from __future__ import annotations

import numpy as np
import pandas as pd

from quantinit.folding import channel_axis
from quantinit.stats import (
    average_channel_precision,
    clipped_activation_stats,
    fans,
    kl_to_uniform,
    percent_accuracy_decrease,
    qce,
    qmse,
    tensor_range,
)


def activation_row(x: np.ndarray, percentile: float, bits: int) -> dict:
    """Range statistics of one activation tensor, percentile-clipped as the paper does."""
    stats = clipped_activation_stats(x, percentile, channel_axis=-1)
    return {
        "min": stats["min"],
        "max": stats["max"],
        "clip_lo": stats["clip_lo"],
        "clip_hi": stats["clip_hi"],
        "clipped_range": stats["clipped_range"],
        "channel_ranges": stats["channel_ranges"].astype(np.float64).tolist(),
        "average_precision": stats["average_precision"],
        "kl_uniform": kl_to_uniform(x, stats["clip_lo"], stats["clip_hi"], 2**bits),
    }


def calibration_table(activations: dict, kinds: dict, percentile: float, bits: int):
    """One row per quantized tensor (in the given order) from its calibration activations."""
    rows = []
    for order, (name, x) in enumerate(activations.items()):
        rows.append(
            {
                "tensor": name,
                "order": order,
                "kind": kinds[name],
                **activation_row(x, percentile, bits),
            }
        )
    return pd.DataFrame(rows)


def weight_stats(kernel: np.ndarray, kind: str, prefix: str, bits: int | None = None) -> dict:
    """min, max, range (and average channel precision, KL to uniform) of a kernel."""
    lo, hi = tensor_range(kernel)
    row = {f"{prefix}_min": lo, f"{prefix}_max": hi, f"{prefix}_range": hi - lo}
    if bits is not None:
        row[f"{prefix}_precision"] = average_channel_precision(kernel, channel_axis(kind))
        row[f"{prefix}_kl_uniform"] = kl_to_uniform(kernel, lo, hi, 2**bits)
    return row


def layerwise_table(layers, trained: dict, folded: dict, calibration: pd.DataFrame, bits: int):
    """One row per kernel layer: trained and folded weights, and its output activation.

    `layers`: analysis.KernelLayer-like objects (order, name, kind, output); `trained` and
    `folded`: {layer name: kernel}; `calibration`: calibration_table's frame.
    """
    by_tensor = calibration.set_index("tensor")
    rows = []
    for layer in layers:
        fan_in, fan_out = fans(trained[layer.name].shape)
        activation = by_tensor.loc[layer.output]
        rows.append(
            {
                "layer": layer.name,
                "order": layer.order,
                "kind": layer.kind,
                "fan_in": fan_in,
                "fan_out": fan_out,
                **weight_stats(trained[layer.name], layer.kind, "weight"),
                **weight_stats(folded[layer.name], layer.kind, "folded_weight", bits),
                "activation": layer.output,
                "activation_clip_lo": activation["clip_lo"],
                "activation_clip_hi": activation["clip_hi"],
                "activation_range": activation["clipped_range"],
                "activation_precision": activation["average_precision"],
                "activation_kl_uniform": activation["kl_uniform"],
            }
        )
    return pd.DataFrame(rows)


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def metrics_row(
    labels, p_fp32, p_quint8, p_tflite=None, qce_epsilon: float = 1e-7, partial=None
) -> dict:
    """The paper's evaluation of one cell (accuracies in percent, as its Table 2), and for
    each of `partial` ({intervals.PARTIAL_MODELS name: probabilities}) its accuracy and QCE
    ("<name>_accuracy", "<name>_qce")."""
    fp32, quint8 = 100 * accuracy(p_fp32, labels), 100 * accuracy(p_quint8, labels)
    row = {
        "fp32_accuracy": fp32,
        "quint8_accuracy": quint8,
        "tflite_int8_accuracy": np.nan if p_tflite is None else 100 * accuracy(p_tflite, labels),
        "qmse": qmse(p_fp32, p_quint8),
        "qce": qce(p_fp32, p_quint8, eps=qce_epsilon),
        "percent_accuracy_decrease": percent_accuracy_decrease(fp32, quint8),
        "tflite_qmse": np.nan if p_tflite is None else qmse(p_fp32, p_tflite),
        "test_samples": len(labels),
    }
    for name, probabilities in (partial or {}).items():
        row[f"{name}_accuracy"] = 100 * accuracy(probabilities, labels)
        row[f"{name}_qce"] = qce(p_fp32, probabilities, eps=qce_epsilon)
    return row


def activation_bounds(calibration: pd.DataFrame, method: str) -> dict:
    """{tensor: (lo, hi)} to quantize with: the clipped range (percentile) or min/max."""
    if method not in ("percentile", "minmax"):
        raise ValueError(f"calibration method must be percentile or minmax, got {method!r}")
    lo, hi = ("clip_lo", "clip_hi") if method == "percentile" else ("min", "max")
    return {
        row.tensor: (float(getattr(row, lo)), float(getattr(row, hi)))
        for row in calibration.itertuples()
    }


def quantization_table(folded: dict, kinds: dict, bounds: dict, scheme: dict):
    """The quantization parameters of every weight and activation tensor.

    One row per tensor: role (weight | activation), tensor, layer kind, the real range the
    scheme quantizes (qmin, qmax; lists for per-channel weights), TensorFlow's nudged range
    and the step (scale). Zero is exactly representable in every nudged range.
    """
    from quantinit.quantization import activation_range, nudged_range, weight_range

    activation_scheme = {**scheme, "granularity": "per_tensor"}
    rows = []
    for name, kernel in folded.items():
        rows.append(
            ("weight", name, kinds[name], weight_range(kernel, scheme, channel_axis(kinds[name])))
        )
    for name, (lo, hi) in bounds.items():
        rows.append(("activation", name, kinds[name], activation_range(lo, hi, activation_scheme)))
    records = []
    for role, name, kind, qrange in rows:
        nudged_min, nudged_max, scale = nudged_range(*qrange)
        records.append(
            {
                "role": role,
                "tensor": name,
                "kind": kind,
                "bits": qrange.bits,
                "narrow_range": qrange.narrow_range,
                "qmin": np.atleast_1d(qrange.qmin_real).astype(np.float64).tolist(),
                "qmax": np.atleast_1d(qrange.qmax_real).astype(np.float64).tolist(),
                "nudged_min": np.atleast_1d(nudged_min).astype(np.float64).tolist(),
                "nudged_max": np.atleast_1d(nudged_max).astype(np.float64).tolist(),
                "scale": np.atleast_1d(scale).astype(np.float64).tolist(),
            }
        )
    return pd.DataFrame(records)


def quantize(folded: dict, layer_kinds: dict, calibration: pd.DataFrame, scheme: dict):
    """Quantization table of every folded kernel ({layer: kernel}, `layer_kinds` {layer:
    kind}) and every calibrated activation, with the scheme's calibration method."""
    bounds = activation_bounds(calibration, scheme["calibration"])
    kinds = {**layer_kinds, **dict(zip(calibration.tensor, calibration.kind, strict=True))}
    return quantization_table(folded, kinds, bounds, scheme)


def quantized_activation_bounds(quantization: pd.DataFrame) -> dict:
    """{tensor: (qmin, qmax)} of the activations of a quantization table: the ranges the
    simulated quint8 model quantizes with."""
    activations = quantization[quantization.role == "activation"]
    return {row.tensor: (row.qmin[0], row.qmax[0]) for row in activations.itertuples()}
