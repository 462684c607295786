"""Per-image terms and intervals against hand calculations (normal approximation, t table)."""

import math

import numpy as np
import pytest

from quantinit.intervals import (
    bootstrap_interval,
    metric_intervals,
    percent_decrease_interval,
    predictions_table,
    seed_interval,
)
from quantinit.stats import qce, qmse


def probabilities(classes, n_classes=10, confidence=0.8):
    p = np.full((len(classes), n_classes), (1 - confidence) / (n_classes - 1))
    p[np.arange(len(classes)), classes] = confidence
    return p


def test_per_image_terms_average_to_the_metrics():
    rng = np.random.default_rng(0)
    p_fp32 = rng.dirichlet(np.ones(10), 500)
    p_quint8 = rng.dirichlet(np.ones(10), 500)
    labels = rng.integers(0, 10, 500)
    table = predictions_table(labels, p_fp32, p_quint8, qce_epsilon=1e-7)
    assert table["squared_error"].mean() == pytest.approx(qmse(p_fp32, p_quint8), rel=1e-12)
    assert table["cross_entropy"].mean() == pytest.approx(qce(p_fp32, p_quint8), rel=1e-12)
    assert (table["fp32_correct"] == (p_fp32.argmax(1) == labels)).all()
    assert table["tflite_class"].isna().all() and table["tflite_correct"].isna().all()


def test_partial_models_add_their_terms_and_leave_the_others_intervals():
    rng = np.random.default_rng(1)
    p_fp32, p_quint8, p_weights, p_acts = (rng.dirichlet(np.ones(10), 400) for _ in range(4))
    labels = rng.integers(0, 10, 400)
    partial = {"weight_only": p_weights, "activation_only": p_acts}
    full = predictions_table(labels, p_fp32, p_quint8, qce_epsilon=1e-7, partial=partial)
    plain = predictions_table(labels, p_fp32, p_quint8, qce_epsilon=1e-7)
    assert full["weight_only_cross_entropy"].mean() == pytest.approx(qce(p_fp32, p_weights))
    assert (full["activation_only_correct"] == (p_acts.argmax(1) == labels)).all()
    with_partial, without = (metric_intervals(t, 200, 3, 0.9) for t in (full, plain))
    assert {k: v for k, v in with_partial.items() if k in without} == without
    assert (
        with_partial["weight_only_qce_lo"]
        < qce(p_fp32, p_weights)
        < with_partial["weight_only_qce_hi"]
    )
    with pytest.raises(ValueError, match="unknown partial model 'int4'"):
        predictions_table(labels, p_fp32, p_quint8, partial={"int4": p_acts})


def test_bootstrap_interval_of_an_accuracy_is_the_normal_approximation():
    """n = 10,000 images, 30% right: 95% interval 30 +- 1.96 * sqrt(.3 * .7 / n) * 100."""
    correct = 100.0 * (np.arange(10_000) % 10 < 3)
    lo, hi = bootstrap_interval(correct, resamples=4000, seed=0, confidence=0.95)
    half = 1.959964 * math.sqrt(0.3 * 0.7 / 10_000) * 100
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert (lo + hi) / 2 == pytest.approx(30.0, abs=0.1)
    assert (lo, hi) == bootstrap_interval(correct, resamples=4000, seed=0, confidence=0.95)
    assert bootstrap_interval(np.full(50, 7.0), 1000, 0, 0.95) == (7.0, 7.0)


def test_the_difference_interval_is_paired():
    """quint8 differs from fp32 on 100 of 10,000 images, always wrongly: the paired
    difference's interval is about -1 +- 1.96 sqrt(.01 * .99 / n) * 100 = +-0.2 points,
    far narrower than two independent 50% accuracies' (+-1.4 points)."""
    labels = np.arange(10_000) % 10
    fp32_classes = np.where(np.arange(10_000) % 2 == 0, labels, (labels + 1) % 10)  # 50% right
    quint8_classes = fp32_classes.copy()
    flipped = np.flatnonzero(fp32_classes == labels)[:100]
    quint8_classes[flipped] = (labels[flipped] + 1) % 10
    table = predictions_table(labels, probabilities(fp32_classes), probabilities(quint8_classes))
    row = metric_intervals(table, resamples=2000, seed=0, confidence=0.95)
    assert row["quint8_minus_fp32"] == pytest.approx(-1.0)
    half = 1.959964 * math.sqrt(0.01 * 0.99 / 10_000) * 100
    assert (row["quint8_minus_fp32_hi"] - row["quint8_minus_fp32_lo"]) / 2 == pytest.approx(
        half, rel=0.15
    )
    assert row["fp32_accuracy_lo"] < 50.0 < row["fp32_accuracy_hi"]
    assert math.isnan(row["tflite_int8_accuracy_lo"])  # no TFLite predictions
    same = predictions_table(labels, probabilities(fp32_classes), probabilities(fp32_classes))
    row = metric_intervals(same, resamples=500, seed=0, confidence=0.95)
    assert (row["quint8_minus_fp32_lo"], row["quint8_minus_fp32_hi"]) == (0.0, 0.0)


def test_percent_decrease_interval_is_the_paired_ratio_bootstrap():
    """Against a paired bootstrap written here in numpy (its own draws: the two agree to
    Monte-Carlo error) and the delta method's normal approximation."""
    rng = np.random.default_rng(3)
    fp32 = rng.random(10_000) < 0.30
    quint8 = np.where(rng.random(10_000) < 0.9, fp32, rng.random(10_000) < 0.25)
    lo, hi = percent_decrease_interval(fp32, quint8, resamples=4000, seed=0, confidence=0.95)
    draws = rng.integers(0, len(fp32), (4000, len(fp32)))
    f, q = fp32[draws].mean(axis=1), quint8[draws].mean(axis=1)
    by_hand = np.percentile(100 * (f - q) / f, [2.5, 97.5])
    assert (lo, hi) == (pytest.approx(by_hand[0], abs=0.25), pytest.approx(by_hand[1], abs=0.25))
    # delta method: d = 100 (1 - Q/F), var(d) = 100^2 var(Q/F), per-image terms
    mf, mq = fp32.mean(), quint8.mean()
    ratio_terms = (quint8 - mq / mf * fp32) / mf
    half = 1.959964 * 100 * ratio_terms.std(ddof=1) / math.sqrt(len(fp32))
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert lo < 100 * (mf - mq) / mf < hi


def test_percent_decrease_interval_edge_cases():
    right = np.array([True, False] * 50)
    assert percent_decrease_interval(right, right, 500, 0, 0.95) == (0.0, 0.0)
    never = np.zeros(100, bool)
    assert all(math.isnan(v) for v in percent_decrease_interval(never, right, 500, 0, 0.95))


def test_metrics_carry_the_percent_decrease_interval_in_its_own_stream():
    labels = np.arange(2000) % 10
    fp32_classes = np.where(np.arange(2000) % 3 == 0, labels, (labels + 1) % 10)
    quint8_classes = np.where(np.arange(2000) % 5 == 0, labels, fp32_classes)
    table = predictions_table(labels, probabilities(fp32_classes), probabilities(quint8_classes))
    row = metric_intervals(table, resamples=500, seed=7, confidence=0.9)
    stream = 10  # after the three accuracies, the difference, QMSE, QCE and the partials'
    expected = percent_decrease_interval(
        table.fp32_correct, table.quint8_correct, 500, 7 + 1000 * stream, 0.9
    )
    assert (row["percent_accuracy_decrease_lo"], row["percent_accuracy_decrease_hi"]) == expected


def test_seed_interval_is_student_t():
    values = [70.0, 72.0, 77.0]  # mean 73, sd 3.6056, sem 2.0817; t(0.975, 2) = 4.3027
    lo, hi = seed_interval(values, 0.95)
    assert (lo, hi) == (pytest.approx(73 - 4.3027 * 2.0817, abs=1e-3),
                        pytest.approx(73 + 4.3027 * 2.0817, abs=1e-3))  # fmt: skip
    assert all(math.isnan(v) for v in seed_interval([70.0], 0.95))
    assert seed_interval([70.0, np.nan, 72.0], 0.95) == seed_interval([70.0, 72.0], 0.95)
