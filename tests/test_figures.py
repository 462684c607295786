"""The figures: files written, and the numbers drawn are the table's numbers."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from quantinit.figures import (
    accuracy_vs_epoch,
    cell_name,
    degradation_heatmap,
    dynamics_figure,
    figure2_vanishing_act,
    figure3_layerwise,
    sensitivity_figure,
)

from conftest import REPO

LAYERS = [
    ("conv1", "conv"),
    ("block1_dw", "depthwise"),
    ("block1_pw", "pointwise"),
    ("fc1", "dense"),
    ("logits", "dense"),
]
NAMES = [name for name, _ in LAYERS]
NO_BN = ("DWS_Conv_No_BN", "GlorotUni")
HE = ("DWS_Conv_With_BN", "HeUni")
RU = ("DWS_Conv_With_BN", "RandUni_Large")
# Vanishing activations of the No_BN cell at its last epoch: a 1e-6 and an exact 0.
NO_BN_ACT = [0.9, 0.05, 1e-6, 0.0, 2e-6]


def _layer_rows(arch, init, seed, epoch, status, **columns):
    rows = []
    for i, (layer, kind) in enumerate(LAYERS):
        row = dict(
            arch=arch, init=init, seed=seed, epoch=epoch, status=status, layer=layer, order=i,
            kind=kind,
        )  # fmt: skip
        row.update({c: float(v[i]) for c, v in columns.items()})
        rows.append(row)
    return rows


def _stats(base):
    """Layerwise columns, distinct per `base`; the activation range spans 3 decades."""
    k = np.arange(5, dtype=float)
    return dict(
        weight_range=base * (1 + 0.1 * k),
        folded_weight_range=base * 10.0 ** (k - 2),
        folded_weight_precision=0.5 + 0.05 * k + 0.01 * base,
        activation_range=base * np.array([2.0, 1.0, 0.5, 0.01, 0.002]),
        activation_precision=0.3 + 0.1 * k,
    )


@pytest.fixture
def layerwise():
    rows = []
    no_bn = _stats(1.0) | {"activation_range": np.array(NO_BN_ACT)}
    # The No_BN cell has an earlier epoch with other numbers: the default picks epoch 2.
    rows += _layer_rows(*NO_BN, 0, 1, "not_learning", **(_stats(3.0)))
    rows += _layer_rows(*NO_BN, 0, 2, "not_learning", **no_bn)
    rows += _layer_rows(*HE, 0, 2, "ok", **_stats(1.0))
    rows += _layer_rows(*HE, 1, 2, "ok", **_stats(2.0))
    rows += _layer_rows(*RU, 0, 2, "ok", **_stats(4.0))
    return pd.DataFrame(rows)


@pytest.fixture
def dynamics():
    rows = []
    for epoch in range(3):
        act = [0.9, 0.1, 0.01 / (epoch + 1), 0.0 if epoch == 2 else 1e-6, 1e-5]
        rows += _layer_rows(
            *HE, 0, epoch, "ok",
            weight_range=[0.5 + 0.1 * epoch + i for i in range(5)],
            activation_range=act,
        )  # fmt: skip
    frame = pd.DataFrame(rows).drop(columns="status")
    return frame


@pytest.fixture
def metrics():
    def row(arch, init, seed, status, decrease, fp32=80.0, quint8=70.0, epoch=3):
        return dict(
            arch=arch, init=init, seed=seed, epoch=epoch, status=status, fp32_accuracy=fp32,
            quint8_accuracy=quint8, percent_accuracy_decrease=decrease,
        )  # fmt: skip

    return pd.DataFrame(
        [
            row(*HE, 0, "ok", 10.0, fp32=80.0, quint8=72.0),
            row(*HE, 1, "ok", 12.0, fp32=84.0, quint8=73.92),
            row(*RU, 0, "ok", 3.25, fp32=82.0, quint8=79.335),
            row("Regular_Conv_No_BN", "HeNorm", 0, "diverged", np.nan, fp32=10.0, quint8=10.0),
            row(*NO_BN, 0, "not_learning", np.nan, fp32=10.0, quint8=10.0),
        ]
    )


def _paths(tmp_path, stem):
    return [tmp_path / f"{stem}.png", tmp_path / "pdf" / f"{stem}.pdf"]


def _check_files(paths, min_size=(400, 250)):
    png, pdf = paths
    assert png.stat().st_size > 0 and pdf.stat().st_size > 0
    with Image.open(png) as img:
        assert img.width >= min_size[0] and img.height >= min_size[1]
        assert img.width < 4000 and img.height < 4000
        assert np.asarray(img.convert("L"), dtype=float).std() > 0
    assert pdf.read_bytes().startswith(b"%PDF")


def _line(ax, gid):
    (line,) = [ln for ln in ax.lines if ln.get_gid() == gid]
    return line


def _tick_labels(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


def test_figure2_plots_zero_at_floor_and_tiny_values(tmp_path, layerwise):
    paths = _paths(tmp_path, "fig2")
    fig = figure2_vanishing_act(layerwise, [NO_BN, HE], paths)
    _check_files(paths)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert "Vanishing act" in ax.get_title()
    assert _tick_labels(ax) == NAMES
    line = _line(ax, cell_name(*NO_BN))
    y = line.get_ydata()
    floor = y[3]
    assert 0 < floor < 1e-6  # the 0 sits below the tiny 1e-6, on the axis
    np.testing.assert_allclose(np.delete(y, 3), np.delete(NO_BN_ACT, 3))
    np.testing.assert_array_equal(line.get_xdata(), np.arange(5))
    # the zero is marked with a hollow marker and explained
    hollow = _line(ax, f"{cell_name(*NO_BN)}|zero")
    assert list(hollow.get_xdata()) == [3] and hollow.get_markerfacecolor() == "none"
    assert any("0 plotted at floor" in t.get_text() for t in ax.texts)
    # two seeds of HeUni: the mean is drawn and the legend says so
    np.testing.assert_allclose(
        _line(ax, cell_name(*HE)).get_ydata(), 1.5 * _stats(1.0)["activation_range"]
    )
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith(cell_name(*HE)) and "mean of 2 seeds" in t for t in legend)
    assert any(t.startswith(cell_name(*NO_BN)) and "not_learning" in t for t in legend)


def test_figure2_explicit_epoch(tmp_path, layerwise):
    fig = figure2_vanishing_act(layerwise, [NO_BN], [tmp_path / "e1.png"], epoch=1)
    y = _line(fig.axes[0], cell_name(*NO_BN)).get_ydata()
    np.testing.assert_allclose(y, _stats(3.0)["activation_range"])
    with pytest.raises(ValueError, match="epoch 7"):
        figure2_vanishing_act(layerwise, [NO_BN], [tmp_path / "e7.png"], epoch=7)


def test_figure3_panels_hold_each_cells_numbers(tmp_path, layerwise):
    paths = _paths(tmp_path, "fig3")
    fig = figure3_layerwise(layerwise, [RU, HE, NO_BN], paths)
    _check_files(paths, min_size=(800, 1000))
    assert len(fig.axes) == 5
    columns = [
        "weight_range",
        "folded_weight_range",
        "folded_weight_precision",
        "activation_range",
        "activation_precision",
    ]
    ru_rows = layerwise[(layerwise.init == "RandUni_Large")].sort_values("order")
    for ax, column in zip(fig.axes, columns, strict=True):
        np.testing.assert_allclose(_line(ax, cell_name(*RU)).get_ydata(), ru_rows[column])
    # second panel, HeUni: the mean over its two seeds in layer order
    he = layerwise[layerwise.init == "HeUni"].groupby("order")["folded_weight_range"].mean()
    np.testing.assert_allclose(_line(fig.axes[1], cell_name(*HE)).get_ydata(), he.to_numpy())
    # scales: small-span weight ranges linear, 4-decade folded ranges log, precisions 0..1
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "log", "linear", "log", "linear"]
    assert fig.axes[2].get_ylim()[0] == 0 and 1 <= fig.axes[2].get_ylim()[1] < 1.1
    # shared layer axis labelled in network order; one shared legend with every cell
    assert _tick_labels(fig.axes[-1]) == NAMES
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert [t.split(" ")[0] for t in texts[:3]] == [cell_name(*c) for c in (RU, HE, NO_BN)]
    # the No_BN zero activation: on the log panel, at a floor below the positive values
    act = _line(fig.axes[3], cell_name(*NO_BN)).get_ydata()
    assert 0 < act[3] < 1e-6


def test_figure3_unknown_cell_is_named(tmp_path, layerwise):
    with pytest.raises(ValueError, match="Regular_Conv_With_BN_HeNorm") as err:
        figure3_layerwise(layerwise, [HE, ("Regular_Conv_With_BN", "HeNorm")], [tmp_path / "x.png"])
    assert "available" in str(err.value) and cell_name(*RU) in str(err.value)
    assert not (tmp_path / "x.png").exists()


def test_dynamics_figure_per_layer_per_epoch(tmp_path, dynamics):
    paths = _paths(tmp_path, "dyn")
    fig = dynamics_figure(dynamics, *HE, paths)
    _check_files(paths)
    weights, acts = fig.axes[:2]
    assert weights.get_yscale() == "log" and acts.get_yscale() == "log"
    line = _line(weights, "block1_pw")
    np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(line.get_ydata(), [2.5, 2.6, 2.7])
    act = _line(acts, "block1_pw").get_ydata()
    np.testing.assert_allclose(act, [0.01, 0.005, 0.01 / 3])
    fc1 = _line(acts, "fc1").get_ydata()
    np.testing.assert_allclose(fc1[:2], [1e-6, 1e-6])
    assert 0 < fc1[2] < 1e-6  # the zero at epoch 2, drawn at the floor
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == NAMES
    assert "epoch (0 = initialization)" in fig.axes[1].get_xlabel()
    # the layers are coloured along the network (distinct colours)
    colors = {tuple(_line(weights, n).get_color()) for n in NAMES}
    assert len(colors) == 5
    with pytest.raises(ValueError, match="seed 5"):
        dynamics_figure(dynamics, *HE, [tmp_path / "s.png"], seed=5)


def test_degradation_heatmap_numbers_and_failures(tmp_path, metrics):
    paths = _paths(tmp_path, "heat")
    fig = degradation_heatmap(metrics, paths)
    _check_files(paths)
    ax = fig.axes[0]
    assert _tick_labels(ax) == ["GlorotUni", "HeNorm", "HeUni", "RandUni_Large"]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == ["DWS_Conv_No_BN", "DWS_Conv_With_BN", "Regular_Conv_No_BN"]
    at = {(int(t.get_position()[1]), int(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert at[(1, 2)] == "11"  # HeUni: mean of 10 and 12 over two seeds
    assert at[(1, 3)] == "3.25"  # RandUni_Large
    assert at[(2, 1)] == "diverged"  # Regular_Conv_No_BN_HeNorm
    assert at[(0, 0)] == "no learn"  # DWS_Conv_No_BN_GlorotUni
    assert len(at) == 4  # the 8 other slots of the grid are blank
    assert "accuracy decrease" in fig.axes[1].get_ylabel()  # the colour bar


def test_degradation_heatmap_partial_failure_and_other_value(tmp_path, metrics):
    extra = metrics.iloc[[2]].assign(seed=1, status="diverged", fp32_accuracy=20.0)
    fig = degradation_heatmap(
        pd.concat([metrics, extra]), [tmp_path / "h.png"], value="fp32_accuracy"
    )
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "82\n(1/2 ok)" in texts  # the diverged seed is left out of the mean
    assert not any(t.startswith("51") for t in texts)  # (82 + 20) / 2 would be 51
    assert "diverged" in texts
    with pytest.raises(ValueError, match="qce"):
        degradation_heatmap(metrics, [tmp_path / "q.png"], value="qce")


def test_degradation_heatmap_shows_table_2s_epoch(tmp_path, metrics):
    """With two analysed epochs the heatmap and Table 2 show the same (last) epoch."""
    from quantinit.aggregate import table2

    earlier = metrics.assign(epoch=1, percent_accuracy_decrease=99.0)
    both = pd.concat([earlier, metrics], ignore_index=True)  # the earlier epoch first
    fig = degradation_heatmap(both, [tmp_path / "h.png"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "11" in texts and "99" not in texts  # HeUni: the mean of epoch 3's 10 and 12
    measured = both.assign(qmse=0.0, qce=0.0, tflite_int8_accuracy=0.0, quint8_minus_fp32=0.0)
    table = table2(measured).set_index("Network")
    assert table.loc["DWS_Conv_With_BN_HeUni", "Percent Accuracy Decrease"] == 11


def _panel(fig, arch):
    return next(ax for ax in fig.axes if ax.get_visible() and ax.get_title() == arch)


def test_accuracy_vs_epoch_lines(tmp_path, metrics):
    later = metrics.assign(epoch=6, quint8_accuracy=metrics.quint8_accuracy - 5)
    paths = _paths(tmp_path, "acc")
    fig = accuracy_vs_epoch(pd.concat([metrics, later]), paths)
    _check_files(paths)
    ax = _panel(fig, HE[0])
    he = cell_name(*HE)
    fp32, quint8 = _line(ax, f"{he}|fp32"), _line(ax, f"{he}|quint8")
    np.testing.assert_array_equal(fp32.get_xdata(), [3, 6])
    np.testing.assert_allclose(fp32.get_ydata(), [82.0, 82.0])
    np.testing.assert_allclose(quint8.get_ydata(), [72.96, 67.96])
    assert fp32.get_linestyle() == "-" and quint8.get_linestyle() == "--"
    assert fp32.get_color() == quint8.get_color()
    assert quint8.get_markerfacecolor() == "none" and fp32.get_marker() == "o"
    assert "epochs 3, 6" in fig.get_suptitle() and "solid" not in fig.get_suptitle()
    assert "95% interval (bootstrap over test images / t over seeds)" in fig.get_suptitle()
    assert ax.get_ylabel() == "test accuracy (%)"
    # one panel per architecture present, in Table 2's order
    assert [a.get_title() for a in fig.axes if a.get_visible()] == [
        "DWS_Conv_No_BN", "DWS_Conv_With_BN", "Regular_Conv_No_BN",
    ]  # fmt: skip


def test_accuracy_single_epoch_shows_each_cell_with_its_interval(tmp_path, metrics):
    from scipy import stats

    one_seed = metrics.assign(quint8_accuracy_lo=metrics.quint8_accuracy - 2.5)
    one_seed["quint8_accuracy_hi"] = one_seed.quint8_accuracy + 1.5
    fig = accuracy_vs_epoch(one_seed, [tmp_path / "a.png"], confidence=0.9)
    ax = _panel(fig, RU[0])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    ru, he = (_line(ax, f"{cell_name(*c)}|quint8") for c in (RU, HE))
    (x,) = ru.get_xdata()
    assert labels[round(x)] == "RandUni_Large" and ru.get_marker() == "s"
    assert _line(ax, f"{cell_name(*RU)}|fp32").get_xdata()[0] < x  # side by side
    np.testing.assert_allclose(ru.get_ydata(), [79.335])
    # one seed: the metrics' bootstrap bounds; two seeds: the t-interval over seeds
    bars = {c.lines[0].get_gid(): c.lines[2][0] for c in ax.containers}
    ((_, lo), (_, hi)) = bars[f"{cell_name(*RU)}|quint8"].get_segments()[0]
    np.testing.assert_allclose([lo, hi], [79.335 - 2.5, 79.335 + 1.5])
    values = np.array([72.0, 73.92])
    half = stats.t.ppf(0.95, 1) * values.std(ddof=1) / np.sqrt(2)
    ((_, lo), (_, hi)) = bars[f"{cell_name(*HE)}|quint8"].get_segments()[0]
    np.testing.assert_allclose([lo, hi], [values.mean() - half, values.mean() + half])
    np.testing.assert_allclose(he.get_ydata(), [values.mean()])
    assert "epoch 3" in fig.get_suptitle() and "90% interval" in fig.get_suptitle()
    # a diverged cell is named in its place, not drawn
    diverged = _panel(fig, "Regular_Conv_No_BN")
    (text,) = [t for t in diverged.texts if t.get_gid()]
    assert text.get_text() == "diverged" and text.get_gid().startswith("Regular_Conv_No_BN_HeNorm")
    assert not [ln for ln in diverged.lines if ln.get_gid()]
    # one scale for all panels, holding every point and bar of every panel
    lo, hi = ax.get_ylim()
    assert all(a.get_ylim() == (lo, hi) for a in fig.axes if a.get_visible())
    tops = [
        seg[1][1] for a in fig.axes for c in a.containers for seg in c.lines[2][0].get_segments()
    ]
    assert lo == 0 and max(tops) < hi <= 100


def test_common_seed_count_is_said_once_in_the_title(tmp_path, layerwise):
    fig = figure2_vanishing_act(layerwise, [HE], [tmp_path / "he.png"])
    ax = fig.axes[0]
    assert "mean of 2 seeds, band = min–max" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [cell_name(*HE)]
    # the band spans the two seeds
    (band,) = ax.collections
    ys = band.get_paths()[0].vertices[:, 1]
    acts = _stats(1.0)["activation_range"]
    np.testing.assert_allclose([ys.min(), ys.max()], [acts.min(), 2 * acts.max()])


def test_module_imports_no_tensorflow_and_no_matplotlib_at_import():
    code = (
        "import sys, quantinit.figures; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
        "assert 'matplotlib' not in sys.modules and 'seaborn' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(REPO / "src")})


def test_sensitivity_figure_stacks_range_error_and_drop(tmp_path, layerwise):
    errors = pd.DataFrame(
        _layer_rows(
            *HE,
            0,
            2,
            "ok",
            rmse_over_scale=[0.29, 0.3, 0.5, 0.28, 0.1],
            weight_rmse_over_scale=[0.29] * 5,
            sqnr_local_db=[40, 35, np.inf, 30, 20],
            sqnr_accumulated_db=[40, 30, 25, 20, 10],
            tflite_sqnr_db=[45, 44, 43, 42, 41],
        )  # fmt: skip
        + _layer_rows(
            *HE,
            1,
            2,
            "ok",
            rmse_over_scale=[0.31, 0.3, 0.7, 0.3, 0.1],
            weight_rmse_over_scale=[0.29] * 5,
            sqnr_local_db=[42, 37, np.inf, 32, 22],
            sqnr_accumulated_db=[38, 28, 23, 18, 8],
            tflite_sqnr_db=[47, 46, 45, 44, 43],
        )  # fmt: skip
    )
    drops = pd.DataFrame(
        _layer_rows(*HE, 0, 2, "ok", only_drop=[1, 0, 8, 2, 0])
        + _layer_rows(*HE, 1, 2, "ok", only_drop=[3, 0, 4, 2, 0])
    )
    paths = _paths(tmp_path, "sensitivity")
    fig = sensitivity_figure(layerwise, errors, drops, *HE, paths)
    _check_files(paths)
    ranges, error_axis, sqnr_axis, drop_axis = fig.axes
    expected_range = (_stats(1.0)["activation_range"] + _stats(2.0)["activation_range"]) / 2
    np.testing.assert_allclose(_line(ranges, "activation_range").get_ydata(), expected_range)
    np.testing.assert_allclose(
        _line(error_axis, "activation").get_ydata(), [0.3, 0.3, 0.6, 0.29, 0.1]
    )
    local = _line(sqnr_axis, "sqnr_local_db").get_ydata()
    np.testing.assert_allclose(local, [41, 36, np.nan, 31, 21])  # no error: not on the line
    infinite = _line(sqnr_axis, "sqnr_local_db|inf")
    assert list(infinite.get_xdata()) == [2] and infinite.get_ydata()[0] == 46 + 5  # at the top
    np.testing.assert_allclose(_line(sqnr_axis, "tflite_sqnr_db").get_ydata(), [46, 45, 44, 43, 42])
    np.testing.assert_allclose(
        _line(sqnr_axis, "sqnr_accumulated_db").get_ydata(), [39, 29, 24, 19, 9]
    )
    heights = [patch.get_height() for patch in drop_axis.patches]
    np.testing.assert_allclose(heights, [2, 0, 6, 2, 0])
    assert _tick_labels(drop_axis) == NAMES
    with pytest.raises(ValueError, match="DWS_Conv_No_BN_GlorotUni"):
        sensitivity_figure(layerwise, errors, drops, *NO_BN, paths)
    no_tflite = sensitivity_figure(layerwise, errors.assign(tflite_sqnr_db=np.nan), drops, *HE,
                                   paths)  # fmt: skip
    assert "tflite_sqnr_db" not in [ln.get_gid() for ln in no_tflite.axes[2].lines]
