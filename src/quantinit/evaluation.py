"""Rule evaluate's stage: the fp32, simulated quint8 (also weight-only and activation-only)
and TFLite int8 models on the test set. The fp32 probabilities come from the trained Keras
model (the caller's); the simulated ones from the architecture's LiteRT engine
(engine.QuantizedNetwork), the int8 ones from LiteRT."""

from __future__ import annotations

import numpy as np
import pandas as pd

from quantinit.intervals import PARTIAL_MODELS, metric_intervals, predictions_table
from quantinit.tables import metrics_row


def check_fold(model, network, probe: np.ndarray) -> float:
    """analysis.check_folding of the trained Keras `model`'s logits against those of
    `network` (an engine.QuantizedNetwork) all float, on the `probe` images: FoldingError
    where the fold is wrong, else the relative difference."""
    import keras

    from quantinit.analysis import check_folding

    logits = network.layers[-1].output
    trained = keras.Model(model.input, model.get_layer(logits).output)
    network.configure()
    folded = np.concatenate([batch[logits] for batch in network.run(probe, [logits])])
    return check_folding(trained.predict(probe, verbose=0), folded)


def evaluate(
    p_fp32: np.ndarray,
    network,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    qce_epsilon: float,
    intervals: dict,
    tflite_model: bytes = b"",
    tflite_threads: int | None = None,
    no_tflite: str | None = None,
) -> tuple[dict, pd.DataFrame]:
    """(metrics row, per-image predictions) of the trained model (its probabilities `p_fp32`
    on `images`), of the simulated quantized model (`network`, an engine.QuantizedNetwork), of
    the same with only its weights or only its activations quantized
    (intervals.PARTIAL_MODELS), and of `tflite_model` when there is one. The row holds each
    metric's bootstrap interval over the test images (`intervals`: confidence, resamples,
    seed; quantinit.intervals).

    LiteRT refuses some degenerate models (e.g. ranges of 1e17 next to all-zero ones in an
    exploded network): the row then keeps its other metrics and says why in tflite_error;
    without a model tflite_error is `no_tflite` (quantinit.schemes.no_tflite_reason).
    """
    if len(p_fp32) != len(images):
        raise ValueError(f"{len(p_fp32)} fp32 predictions for {len(images)} images")
    sides = {
        "quint8": {},
        "weight_only": {"tensors": False},
        "activation_only": {"kernels": False},
    }
    predicted = {}
    for name in ("quint8", *PARTIAL_MODELS):
        network.configure_all(**sides[name])
        predicted[name] = network.predict(images)
    p_quint8 = predicted["quint8"]
    partial = {name: predicted[name] for name in PARTIAL_MODELS}
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
