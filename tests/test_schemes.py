"""Quantization schemes: their settings' consequences, the schemes table, the ranking
agreement (against Kendall's tau counted here by hand) and the schemes figure."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from quantinit.aggregate import (
    SCHEME_COLUMNS,
    axis_markdown,
    ranking_agreement,
    schemes_table,
)
from quantinit.config_checks import canonical
from quantinit.figures import axis_figure
from quantinit.schemes import clipping_percentile, describe, no_tflite_reason

QUINT8 = {"name": "quint8", "bits": 8, "granularity": "per_tensor", "symmetric": False,
          "calibration": "percentile", "percentile": 1.0}  # fmt: skip
INT4 = {**QUINT8, "name": "int4", "bits": 4, "granularity": "per_channel", "symmetric": True}
MINMAX = {**QUINT8, "name": "minmax", "calibration": "minmax", "percentile": 5.0}
INITS = ["GlorotUni", "HeUni", "HeNorm", "RandUni_Small", "RandNorm_Small"]


def test_settings_say_what_each_scheme_does():
    assert clipping_percentile(QUINT8) == 1.0
    assert clipping_percentile(MINMAX) == 0.0  # min/max: whatever percentile says
    assert describe(QUINT8) == "8-bit per-tensor asymmetric, 1% clipping"
    assert describe(INT4) == "4-bit per-channel symmetric, 1% clipping"
    assert describe(MINMAX) == "8-bit per-tensor asymmetric, min/max"
    assert no_tflite_reason(QUINT8) is None and no_tflite_reason(MINMAX) is None
    assert "4-bit" in no_tflite_reason(INT4)
    assert "evaluation.tflite is off" in no_tflite_reason(QUINT8, enabled=False)


def test_canonical_config_compares_equal_whatever_its_source():
    from collections import OrderedDict

    from_file = OrderedDict([("name", "q"), ("bits", 8), ("nested", OrderedDict(b=1, a=2))])
    from_overlay = {"nested": {"a": 2, "b": 1}, "bits": 8, "name": "q"}
    assert repr(canonical([from_file])) == repr(canonical([from_overlay]))
    assert type(canonical(from_file)) is dict and list(canonical(from_file)) == [
        "bits", "name", "nested"
    ]  # fmt: skip
    assert canonical([3, 1]) == [3, 1]  # lists keep their order


def metrics_row(scheme, arch, init, fp32, quantized, status="ok"):
    row = {"arch": arch, "init": init, "seed": 0, "epoch": 4, "scheme": scheme,
           "status": status, "fp32_accuracy": fp32, "quint8_accuracy": quantized,
           "percent_accuracy_decrease": 100 * (fp32 - quantized) / fp32,
           "quint8_minus_fp32": quantized - fp32, "weight_only_accuracy": quantized + 1,
           "activation_only_accuracy": fp32 - 1, "tflite_int8_accuracy": np.nan,
           "tflite_error": None if scheme != "int4" else no_tflite_reason(INT4)}  # fmt: skip
    for metric in SCHEME_COLUMNS:
        row[f"{metric}_lo"], row[f"{metric}_hi"] = row[metric] - 1, row[metric] + 1
    return row


@pytest.fixture
def metrics():
    """Two architectures; int4 reverses the order of DWS's decreases and keeps Regular's."""
    rows = []
    for k, init in enumerate(INITS):
        rows.append(metrics_row("quint8", "DWS_Conv_With_BN", init, 60.0, 60.0 - k))
        rows.append(metrics_row("int4", "DWS_Conv_With_BN", init, 60.0, 50.0 + k))
        rows.append(metrics_row("quint8", "Regular_Conv_With_BN", init, 70.0, 69.0 - k))
        rows.append(metrics_row("int4", "Regular_Conv_With_BN", init, 70.0, 60.0 - 2 * k))
    rows.append(metrics_row("quint8", "DWS_Conv_No_BN", "HeUni", 10.0, 10.0, "not_learning"))
    rows.append(metrics_row("int4", "DWS_Conv_No_BN", "HeUni", 10.0, 12.0, "not_learning"))
    return pd.DataFrame(rows)


def test_schemes_table_summarizes_each_scheme_in_config_order(metrics):
    table = schemes_table(metrics, [QUINT8, INT4])
    assert list(dict.fromkeys(table.Scheme)) == ["quint8", "int4"]
    assert len(table) == 2 * (2 * len(INITS) + 1)
    int4 = table[table.Scheme == "int4"].set_index("Network")
    assert int4.loc["DWS_Conv_With_BN_HeUni", "Quantized Accuracy"] == 51.0
    assert int4.loc["DWS_Conv_With_BN_HeUni", "Percent Accuracy Decrease lo"] == pytest.approx(
        100 * 9 / 60 - 1
    )
    assert set(int4.Settings) == {describe(INT4)}
    assert set(int4["TFLite error"]) == {no_tflite_reason(INT4)}
    with pytest.raises(ValueError, match="no metrics of scheme 'minmax'"):
        schemes_table(metrics, [QUINT8, MINMAX])


def kendall_tau_by_hand(x, y):
    """tau-a = tau-b without ties: (concordant - discordant) / pairs."""
    signs = [np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
             for i, j in itertools.combinations(range(len(x)), 2)]  # fmt: skip
    return sum(signs) / len(signs)


def test_ranking_agreement_is_kendalls_tau_over_trained_cells(metrics):
    metrics.loc[
        (metrics.scheme == "int4") & (metrics.init == "RandUni_Small")
        & (metrics.arch == "Regular_Conv_With_BN"), "quint8_accuracy"
    ] = 66.0  # fmt: skip
    metrics["percent_accuracy_decrease"] = (
        100 * (metrics.fp32_accuracy - metrics.quint8_accuracy) / metrics.fp32_accuracy
    )
    table = schemes_table(metrics, [QUINT8, INT4])
    agreement = ranking_agreement(table, "quint8").set_index("Architecture")
    assert list(agreement.index) == ["DWS_Conv_No_BN", "DWS_Conv_With_BN", "Regular_Conv_With_BN"]
    assert agreement.loc["DWS_Conv_With_BN", "Kendall tau"] == pytest.approx(-1.0)
    # exact null distribution of 5 untied items: P(tau = -1) = P(tau = 1) = 1 / 5!
    assert agreement.loc["DWS_Conv_With_BN", "p"] == pytest.approx(2 / 120)
    decrease = table.set_index(["Scheme", "arch", "init"])["Percent Accuracy Decrease"]
    reference = [decrease["quint8", "Regular_Conv_With_BN", i] for i in INITS]
    other = [decrease["int4", "Regular_Conv_With_BN", i] for i in INITS]
    assert agreement.loc["Regular_Conv_With_BN", "Kendall tau"] == pytest.approx(
        kendall_tau_by_hand(reference, other)
    )
    assert agreement.loc["Regular_Conv_With_BN", "Initializers"] == len(INITS)
    # the smallest decrease: quint8 keeps GlorotUni's accuracy; int4 keeps RandNorm_Small's
    assert agreement.loc["DWS_Conv_With_BN", "Best (reference)"] == "GlorotUni"
    assert agreement.loc["DWS_Conv_With_BN", "Best (scheme)"] == "RandNorm_Small"
    # the not-learning cell is not ranked
    assert agreement.loc["DWS_Conv_No_BN", "Initializers"] == 0
    assert math.isnan(agreement.loc["DWS_Conv_No_BN", "Kendall tau"])


def test_schemes_markdown_has_a_section_per_scheme_and_the_agreement(metrics):
    table = schemes_table(metrics, [QUINT8, INT4])
    text = axis_markdown(table, ranking_agreement(table, "quint8"))
    assert text.index("## quint8: 8-bit per-tensor") < text.index("## int4: 4-bit per-channel")
    assert "| DWS_Conv_With_BN_HeUni | 60.00 [59.00, 61.00] | 51.00 [50.00, 52.00] |" in text
    assert f"not run: {no_tflite_reason(INT4)}" in text
    assert (
        "| DWS_Conv_With_BN | int4 | quint8 | 5 | -1.00 | 0.017 | GlorotUni | RandNorm_Small |"
        in text
    )


def test_schemes_figure_draws_trained_cells_with_intervals(tmp_path, metrics):
    table = schemes_table(metrics, [QUINT8, INT4])
    fig = axis_figure(table, [tmp_path / "schemes.png", tmp_path / "schemes.pdf"])
    assert (tmp_path / "schemes.png").stat().st_size > 10_000
    assert (tmp_path / "schemes.pdf").read_bytes()[:4] == b"%PDF"
    axes = np.array(fig.axes).reshape(2, 3)  # schemes x architectures in Table 2's order
    assert [ax.get_title() for ax in axes[0]] == [
        "DWS_Conv_No_BN", "DWS_Conv_With_BN", "Regular_Conv_With_BN"
    ]  # fmt: skip
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.lines if line.get_gid()}
    point = lines["int4|DWS_Conv_With_BN_HeUni"]
    ticks = [label.get_text() for label in axes[1, 1].get_xticklabels()]
    assert ticks[int(point.get_xdata()[0])] == "HeUni"  # Table 2's order: He after Glorot
    assert ticks[:3] == ["GlorotUni", "HeNorm", "HeUni"]
    assert point.get_ydata()[0] == pytest.approx(100 * 9 / 60)
    assert point.axes is axes[1, 1]
    labels = [t.get_gid() for ax in fig.axes for t in ax.texts]
    assert "int4|DWS_Conv_No_BN_HeUni|not_learning" in labels
    assert not any(gid.startswith("quint8|DWS_Conv_No_BN") for gid in lines)
    ylim = axes[0, 0].get_ylim()
    assert all(ax.get_ylim() == ylim for ax in fig.axes)  # one scale for every panel
    bounds = table["Percent Accuracy Decrease hi"][table.Status == "ok"]
    assert ylim[0] <= bounds.min() and bounds.max() <= ylim[1]
