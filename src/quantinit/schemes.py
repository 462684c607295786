"""The study's quantization schemes (config `quantization.schemes`): what follows from a
scheme's settings, in one place. Standard library only: the Snakefile imports it.

A scheme is a dict with name, bits, granularity (per_tensor | per_channel), symmetric,
calibration (percentile | minmax) and percentile; config/schema.yaml fills omitted settings
with the paper's quint8 values.
"""

from __future__ import annotations

from collections.abc import Mapping

# The integer width of TFLite's builtin int8 kernels, the only deployed model built here.
TFLITE_BITS = 8


def clipping_percentile(scheme: Mapping) -> float:
    """The percentile p at which calibration clips activations (bottom and top p%): the
    scheme's own with percentile calibration, 0 (the raw min and max) with minmax."""
    return 0.0 if scheme["calibration"] == "minmax" else float(scheme["percentile"])


def describe(scheme: Mapping) -> str:
    """A short label: "8-bit per-tensor asymmetric, 1% clipping"."""
    granularity = scheme["granularity"].replace("_", "-")
    symmetry = "symmetric" if scheme["symmetric"] else "asymmetric"
    calibration = (
        "min/max" if scheme["calibration"] == "minmax" else f"{scheme['percentile']:g}% clipping"
    )
    return f"{scheme['bits']}-bit {granularity} {symmetry}, {calibration}"


def no_tflite_reason(scheme: Mapping, enabled: bool = True) -> str | None:
    """Why the scheme's cells get no TFLite int8 model, or None when they do (the model is
    converted with the scheme's weight granularity; TFLite's own int8 rules otherwise)."""
    if not enabled:
        return "no TFLite model (evaluation.tflite is off)"
    if scheme["bits"] != TFLITE_BITS:
        return (
            f"no TFLite model for a {scheme['bits']}-bit scheme (TFLite's integer kernels "
            f"are {TFLITE_BITS}-bit)"
        )
    return None
