"""How sure a number is: per-image terms of the evaluation metrics, bootstrap intervals over
test images, t-intervals over seeds (scipy.stats).

Every metric of Table 2 except the percent decrease is a mean over test images of a
per-image term: accuracy of "correct" (in percent), QMSE of the image's mean squared
probability difference, QCE of the image's cross-entropy, and the quint8 - fp32 accuracy
difference of correct_quint8 - correct_fp32. A percentile bootstrap over images of that mean
gives its interval; the difference's interval resamples images once for both models, so it
is paired (the two models err on many of the same images, which narrows it). The percent
decrease, 100 (fp32 - quint8) / fp32, is a ratio of two such means: its interval comes from
the same paired resampling with the ratio computed on each resample.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# The simulated model with only one side quantized: weights (float activations) or
# activations (float kernels); engine.QuantizedNetwork.configure_all's switches
PARTIAL_MODELS = ("weight_only", "activation_only")
# metric -> per-image column of the predictions table it is the mean of (x100: percent)
ACCURACY_TERMS = {
    "fp32_accuracy": "fp32_correct",
    "quint8_accuracy": "quint8_correct",
    "tflite_int8_accuracy": "tflite_correct",
}
# Every metric with an interval, in the order of their seed streams (seed + 1000 k); a new
# metric goes last, so the others' intervals stay as they were
INTERVAL_METRICS = (
    *ACCURACY_TERMS,
    "quint8_minus_fp32",
    "qmse",
    "qce",
    *(f"{model}_{metric}" for model in PARTIAL_MODELS for metric in ("accuracy", "qce")),
    "percent_accuracy_decrease",
)


def _cross_entropy(p_fp32, p_other, qce_epsilon):
    return -np.sum(p_fp32 * np.log(np.clip(p_other, qce_epsilon, 1.0)), axis=1)


def predictions_table(labels, p_fp32, p_quint8, p_tflite=None, qce_epsilon=1e-7, partial=None):
    """One row per test image: its label, each model's class, whether it is right, and the
    image's QMSE and QCE terms (their means over images are metrics_row's qmse and qce).
    `partial` ({PARTIAL_MODELS name: probabilities}) adds each one's class, correctness and
    QCE term ("<name>_cross_entropy")."""
    p_fp32 = np.asarray(p_fp32, dtype=np.float64)
    p_quint8 = np.asarray(p_quint8, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    frame = pd.DataFrame(
        {
            "image": np.arange(len(labels), dtype=np.int64),
            "label": labels,
            "fp32_class": p_fp32.argmax(axis=1),
            "quint8_class": p_quint8.argmax(axis=1),
            "tflite_class": pd.array(
                [None] * len(labels) if p_tflite is None else np.argmax(p_tflite, axis=1),
                dtype="Int64",
            ),
            "squared_error": np.mean((p_fp32 - p_quint8) ** 2, axis=1),
            "cross_entropy": _cross_entropy(p_fp32, p_quint8, qce_epsilon),
        }
    )
    for model in ("fp32", "quint8", "tflite"):
        frame[f"{model}_correct"] = (frame[f"{model}_class"] == frame["label"]).astype("boolean")
    for name, probabilities in (partial or {}).items():
        if name not in PARTIAL_MODELS:
            raise ValueError(f"unknown partial model {name!r}; known: {PARTIAL_MODELS}")
        probabilities = np.asarray(probabilities, dtype=np.float64)
        frame[f"{name}_class"] = probabilities.argmax(axis=1)
        frame[f"{name}_correct"] = (frame[f"{name}_class"] == frame["label"]).astype("boolean")
        frame[f"{name}_cross_entropy"] = _cross_entropy(p_fp32, probabilities, qce_epsilon)
    return frame


def bootstrap_interval(values, resamples: int, seed: int, confidence: float):
    """(lo, hi): the percentile bootstrap interval of mean(values) (scipy.stats.bootstrap);
    a constant sample gives (value, value)."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=np.float64)
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = bootstrap(
        (values,),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
        batch=max(1, 2_000_000 // len(values)),  # resamples per batch: ~16 MB of indices
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def percent_decrease_interval(
    fp32_correct, quint8_correct, resamples: int, seed: int, confidence: float
):
    """(lo, hi): the paired percentile bootstrap interval of 100 (mean(fp32) - mean(quint8))
    / mean(fp32) over images (0/1 correctness per image); (nan, nan) when the fp32 model gets
    no image right (the ratio is undefined)."""
    from scipy.stats import bootstrap

    fp32 = np.asarray(fp32_correct, dtype=np.float64)
    quint8 = np.asarray(quint8_correct, dtype=np.float64)
    if not fp32.any():
        return np.nan, np.nan
    if np.array_equal(fp32, quint8):
        return 0.0, 0.0

    def decrease(f, q, axis=-1):
        f_mean = f.mean(axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 100.0 * (f_mean - q.mean(axis=axis)) / f_mean

    result = bootstrap(
        (fp32, quint8),
        decrease,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
        batch=max(1, 2_000_000 // len(fp32)),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def metric_intervals(predictions: pd.DataFrame, resamples: int, seed: int, confidence: float):
    """{<metric>_lo, <metric>_hi} for the accuracies (percent), quint8_minus_fp32 (points,
    with its value), qmse and qce, the partial models' accuracy and qce where the
    predictions table has them, and percent_accuracy_decrease. Each metric draws from its own
    seed stream (seed + 1000 k, k its place in INTERVAL_METRICS)."""
    terms = {
        metric: 100.0 * predictions[column].astype("float64")
        for metric, column in ACCURACY_TERMS.items()
    }
    terms["quint8_minus_fp32"] = terms["quint8_accuracy"] - terms["fp32_accuracy"]
    terms["qmse"] = predictions["squared_error"]
    terms["qce"] = predictions["cross_entropy"]
    for name in PARTIAL_MODELS:
        if f"{name}_correct" in predictions:
            terms[f"{name}_accuracy"] = 100.0 * predictions[f"{name}_correct"].astype("float64")
            terms[f"{name}_qce"] = predictions[f"{name}_cross_entropy"]
    row = {"quint8_minus_fp32": float(terms["quint8_minus_fp32"].mean())}

    def stream(metric):
        return seed + 1000 * INTERVAL_METRICS.index(metric)

    for metric, values in terms.items():
        values = values.dropna().to_numpy()
        lo = hi = np.nan
        if len(values):
            lo, hi = bootstrap_interval(values, resamples, stream(metric), confidence)
        row[f"{metric}_lo"], row[f"{metric}_hi"] = lo, hi
    metric = "percent_accuracy_decrease"
    row[f"{metric}_lo"], row[f"{metric}_hi"] = percent_decrease_interval(
        predictions["fp32_correct"],
        predictions["quint8_correct"],
        resamples,
        stream(metric),
        confidence,
    )
    return row


def seed_interval(values, confidence: float):
    """(lo, hi): the Student-t interval of the mean of per-seed values (scipy.stats.t);
    (nan, nan) for fewer than two values."""
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return np.nan, np.nan
    mean, sem = values.mean(), values.std(ddof=1) / np.sqrt(len(values))
    half = t.ppf(0.5 + confidence / 2, df=len(values) - 1) * sem
    return float(mean - half), float(mean + half)
