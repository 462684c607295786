"""Rule calibrate's stage: the BN-folded network run on the calibration images by the
architecture's LiteRT engine (quantinit.engine; no TensorFlow), and the ranges of every
quantized tensor."""

from __future__ import annotations

import numpy as np

from quantinit.tables import calibration_table


def calibrate(engine, folded: dict, images: np.ndarray, kinds: dict, percentile: float, bits: int):
    """Calibration table of the tensors `kinds` ({tensor: kind}) of the folded network (its
    `folded` weights, {layer: {"kernel", "bias"}}, on `engine`, all float) on `images`:
    min/max and the `percentile`-clipped range of each (tables.calibration_table)."""
    from quantinit.engine import folded_weights

    engine.set_weights(folded_weights(folded))
    activations = engine.collect(images, engine.quantizers({}), list(kinds))
    return calibration_table(activations, kinds, percentile, bits)
