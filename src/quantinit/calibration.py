"""Rule calibrate's stage: the folded model run on the calibration images, and the ranges of
every quantized tensor (TensorFlow imported on use)."""

from __future__ import annotations

import numpy as np

from quantinit.tables import calibration_table


def calibrate(model, images: np.ndarray, kinds: dict, percentile: float, bits: int):
    """Calibration table of the tensors `kinds` ({tensor: kind}) of the folded `model` on
    `images`: min/max and the `percentile`-clipped range of each (tables.calibration_table)."""
    from quantinit.analysis import capture

    activations = capture(model, images, list(kinds))
    return calibration_table(activations, kinds, percentile, bits)
