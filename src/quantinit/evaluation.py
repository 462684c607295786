"""Rule evaluate's stage: the fp32, simulated quint8 (also weight-only and activation-only)
and TFLite int8 models on the test set (TensorFlow and LiteRT imported on use)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from quantinit.intervals import PARTIAL_MODELS, metric_intervals, predictions_table
from quantinit.tables import metrics_row, quantized_activation_bounds


def evaluate(
    model,
    folded,
    quantization: pd.DataFrame,
    scheme: dict,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    qce_epsilon: float,
    intervals: dict,
    tflite_model: bytes = b"",
    tflite_threads: int | None = None,
    no_tflite: str | None = None,
) -> tuple[dict, pd.DataFrame]:
    """(metrics row, per-image predictions) of the trained `model` (fp32), of the simulated
    quantized model built from the `folded` model and `quantization`, of the same with only
    its weights or only its activations quantized (intervals.PARTIAL_MODELS), and of
    `tflite_model` when there is one. The row holds each metric's bootstrap interval over the
    test images (`intervals`: confidence, resamples, seed; quantinit.intervals).

    LiteRT refuses some degenerate models (e.g. ranges of 1e17 next to all-zero ones in an
    exploded network): the row then keeps its other metrics and says why in tflite_error;
    without a model tflite_error is `no_tflite` (quantinit.schemes.no_tflite_reason).
    """
    from quantinit.analysis import build_quantized_model

    p_fp32 = model.predict(images, batch_size=batch_size, verbose=0)
    bounds = quantized_activation_bounds(quantization)
    quantized = build_quantized_model(folded, bounds, scheme)
    p_quint8 = quantized.predict(images, batch_size=batch_size, verbose=0)
    sides = {"weight_only": {"activations": False}, "activation_only": {"weights": False}}
    partial = {
        name: build_quantized_model(folded, bounds, scheme, **sides[name]).predict(
            images, batch_size=batch_size, verbose=0
        )
        for name in PARTIAL_MODELS
    }
    p_tflite, tflite_error = None, None if tflite_model else no_tflite
    if tflite_model:
        from quantinit.tflite import run_tflite

        try:
            p_tflite = run_tflite(tflite_model, images, batch_size, num_threads=tflite_threads)
        except RuntimeError as error:
            tflite_error = str(error)
    row = metrics_row(labels, p_fp32, p_quint8, p_tflite, qce_epsilon, partial)
    row["tflite_error"] = tflite_error
    predictions = predictions_table(labels, p_fp32, p_quint8, p_tflite, qce_epsilon, partial)
    row.update(
        metric_intervals(
            predictions, intervals["resamples"], intervals["seed"], intervals["confidence"]
        ),
        confidence=intervals["confidence"],
        bootstrap_resamples=intervals["resamples"],
    )
    return row, predictions
