"""Figures of the study, drawn from the concatenated per-cell Parquet tables.

* ``figure2_vanishing_act``: paper Fig. 2, clipped activation range along the network.
* ``figure3_layerwise``: paper Fig. 3, five stacked layerwise panels.
* ``dynamics_figure``: weight / activation range of every layer per training epoch.
* ``degradation_heatmap``: architectures x initializers, e.g. percent accuracy decrease.
* ``accuracy_vs_epoch``: fp32 vs quint8 test accuracy per cell (per analysed epoch if several),
  with Table 2's intervals.
* ``schemes_figure``: percent accuracy decrease per cell, scheme x architecture panels.

Inputs are pandas DataFrames holding many cells' rows (key columns arch, init, seed, epoch,
status; see docs/parquet-schemas.md). A cell is named like the paper, ``cell_name(arch, init)``
(e.g. ``DWS_Conv_With_BN_RandUni_Large``). Where a cell has several seeds the mean over seeds
is drawn with a shaded min-max band and the legend says so; ``accuracy_vs_epoch`` draws Table
2's intervals instead.

Return convention: every public function writes the figure to each of ``paths`` (a list of
.png and/or .pdf paths, or a single path; parent folders are created; raster output at 150
dpi), then closes it (detaches it from pyplot, so a workflow drawing many figures does not
accumulate them) and returns the matplotlib ``Figure``. A closed figure keeps its axes, lines
and texts, so callers and tests can inspect what was drawn. Data lines carry a ``gid``: the
cell name (Figs. 2 and 3), the layer name (dynamics), ``"<cell>|fp32"`` / ``"<cell>|quint8"``
(accuracy); hollow markers of zeros drawn at the log-axis floor carry ``"<gid>|zero"``.

matplotlib (Agg backend) and seaborn are imported on first use; TensorFlow never is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantinit.aggregate import ARCH_ORDER, INIT_ORDER, cell_name, final_epoch
from quantinit.io import atomic_path
from quantinit.registry import STATUS_DIVERGED, STATUS_NOT_LEARNING, STATUS_OK

# How a failed cell is written in the heatmap instead of a number.
STATUS_TEXT = {STATUS_DIVERGED: "diverged", STATUS_NOT_LEARNING: "no learn"}
VALUE_LABELS = {
    "percent_accuracy_decrease": "accuracy decrease fp32 → quint8 (% of fp32 accuracy)",
    "qmse": "QMSE (fp32 vs quint8 softmax outputs)",
    "qce": "QCE (nats)",
    "fp32_accuracy": "fp32 test accuracy (%)",
    "quint8_accuracy": "quint8 test accuracy (%)",
    "tflite_int8_accuracy": "TFLite int8 test accuracy (%)",
    "tflite_qmse": "TFLite int8 QMSE",
}
FIG3_PANELS = (
    ("weight_range", "Weight ranges", "weight range\n(max − min)"),
    ("folded_weight_range", "BN-folded weight ranges", "BN-folded\nweight range"),
    ("folded_weight_precision", "BN-folded weight precisions", "BN-folded weight\nprecision"),
    ("activation_range", "Activation ranges (clipped)", "activation range\n(clipped)"),
    ("activation_precision", "Activation precisions", "activation\nprecision"),
)
DPI = 150
ZERO_NOTE = "0 plotted at floor (hollow markers)"


# --------------------------------------------------------------------------- helpers


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _palette(n: int) -> list:
    import seaborn as sns

    return list(sns.color_palette("tab10" if n <= 10 else "husl", n))


def _as_paths(paths: Any) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = [Path(p) for p in paths]
    if not out:
        raise ValueError("no output paths given")
    return out


def _provenance_metadata(suffix: str) -> dict | None:
    """The code's provenance as PNG text chunks or the PDF's Creator entry."""
    from quantinit.provenance import provenance

    stored = provenance()
    if suffix == ".png":
        return {"quantinit_provenance": json.dumps(stored)}
    if suffix == ".pdf":
        return {"Creator": f"quantinit {json.dumps(stored)}"}
    return None


def _save(fig, paths: Any):
    plt = _pyplot()
    for path in _as_paths(paths):
        with atomic_path(path) as tmp:
            fig.savefig(
                tmp, dpi=DPI, bbox_inches="tight", metadata=_provenance_metadata(path.suffix)
            )
    plt.close(fig)
    return fig


def _require(df: pd.DataFrame, columns: Iterable[str], table: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{table} table lacks column(s) {missing}; has {list(df.columns)}")
    if df.empty:
        raise ValueError(f"{table} table is empty")


def _ordered(values: Iterable[str], order: Sequence[str]) -> list[str]:
    """Known values in the paper's order, then unknown ones sorted."""
    present = set(values)
    return [v for v in order if v in present] + sorted(present - set(order))


def _cell_sort_key(cell: tuple[str, str]) -> tuple:
    arch, init = cell
    a = ARCH_ORDER.index(arch) if arch in ARCH_ORDER else len(ARCH_ORDER)
    i = INIT_ORDER.index(init) if init in INIT_ORDER else len(INIT_ORDER)
    return (a, arch, i, init)


def _available(df: pd.DataFrame) -> list[tuple[str, str]]:
    cells = set(zip(df["arch"].astype(str), df["init"].astype(str), strict=True))
    return sorted(cells, key=_cell_sort_key)


def _check_cells(df: pd.DataFrame, cells: Iterable[tuple[str, str]], table: str) -> list:
    wanted = list(dict.fromkeys((str(a), str(i)) for a, i in cells))
    if not wanted:
        raise ValueError("no cells selected")
    available = _available(df)
    missing = [c for c in wanted if c not in set(available)]
    if missing:
        raise ValueError(
            f"cell(s) not found in the {table} table: "
            + ", ".join(cell_name(*c) for c in missing)
            + "; available: "
            + ", ".join(cell_name(*c) for c in available)
        )
    return wanted


def _cell_rows(df: pd.DataFrame, arch: str, init: str) -> pd.DataFrame:
    return df[(df["arch"] == arch) & (df["init"] == init)]


def _at_epoch(sub: pd.DataFrame, epoch: int | None, name: str) -> tuple[pd.DataFrame, int]:
    chosen = int(sub["epoch"].max()) if epoch is None else int(epoch)
    rows = sub[sub["epoch"] == chosen]
    if rows.empty:
        raise ValueError(
            f"{name}: no rows at epoch {chosen}; epochs present: "
            f"{sorted(int(e) for e in sub['epoch'].unique())}"
        )
    return rows, chosen


def _spread(rows: pd.DataFrame, by: str | list[str], column: str) -> pd.DataFrame:
    """Mean, min, max and count over seeds of ``column``, indexed by ``by``, sorted."""
    g = rows.groupby(by)[column]
    return pd.DataFrame(
        {"mean": g.mean(), "min": g.min(), "max": g.max(), "n": g.count()}
    ).sort_index()


def _status_note(rows: pd.DataFrame) -> str:
    if "status" not in rows.columns:
        return ""
    per_seed = rows.drop_duplicates("seed")["status"].astype(str)
    bad = per_seed[per_seed != STATUS_OK]
    if bad.empty:
        return ""
    counts = bad.value_counts()
    if len(bad) == len(per_seed):
        return "/".join(counts.index)
    return ", ".join(f"{s} in {n}/{len(per_seed)} seeds" for s, n in counts.items())


def _n_seeds(rows: pd.DataFrame) -> int:
    return int(rows["seed"].nunique()) if "seed" in rows.columns else 1


def _seed_notes(cell_rows: Sequence[pd.DataFrame], spread: str = "band") -> tuple[str, bool]:
    """What the title says about seeds, and whether each legend label must say it instead.

    One common seed count: said once in the title ("" for a single seed). Differing counts:
    the title explains the spread and every multi-seed cell's label gives its count.
    """
    counts = {_n_seeds(r) for r in cell_rows}
    if counts == {1}:
        return "", False
    if len(counts) == 1:
        return f"mean of {counts.pop()} seeds, {spread} = min–max", False
    return f"mean over seeds where several, {spread} = min–max", True


def _cell_label(name: str, rows: pd.DataFrame, per_cell_seeds: bool) -> str:
    notes = []
    n_seeds = _n_seeds(rows)
    if per_cell_seeds and n_seeds > 1:
        notes.append(f"mean of {n_seeds} seeds")
    status = _status_note(rows)
    if status:
        notes.append(status)
    return name + (f" ({'; '.join(notes)})" if notes else "")


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _positive(values: Iterable[np.ndarray]) -> np.ndarray:
    arrays = [np.asarray(v, dtype=float).ravel() for v in values]
    allv = np.concatenate(arrays) if arrays else np.array([])
    return allv[np.isfinite(allv) & (allv > 0)]


def _log_floor(values: Iterable[np.ndarray]) -> float:
    """A decade below the smallest positive value: where zeros are drawn on a log axis."""
    pos = _positive(values)
    if pos.size == 0:
        return 1e-12
    return float(10.0 ** (math.floor(math.log10(pos.min())) - 1))


def _span_decades(values: Iterable[np.ndarray]) -> float:
    pos = _positive(values)
    if pos.size == 0:
        return 0.0
    return float(math.log10(pos.max() / pos.min()))


def _draw_series(
    ax, x, stats: pd.DataFrame, *, color, label: str, gid: str, log: bool, floor: float
) -> bool:
    """Mean line with a min-max band where several seeds exist; zeros at ``floor`` if log.

    Returns whether a zero was drawn at the floor.
    """
    x = np.asarray(x, dtype=float)
    y = stats["mean"].to_numpy(float)
    lo = stats["min"].to_numpy(float)
    hi = stats["max"].to_numpy(float)
    zero = np.isfinite(y) & (y <= 0)
    if log:
        y = np.where(zero, floor, y)
        lo = np.where(np.isfinite(lo) & (lo <= 0), floor, lo)
    (line,) = ax.plot(x, y, marker="o", markersize=4, linewidth=1.6, color=color, label=label)
    line.set_gid(gid)
    if (stats["n"].to_numpy() > 1).any():
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
    if log and zero.any():
        (hollow,) = ax.plot(
            x[zero],
            y[zero],
            linestyle="none",
            marker="o",
            markersize=10,
            markerfacecolor="none",
            markeredgecolor=color,
            markeredgewidth=1.6,
            label="_nolegend_",
        )
        hollow.set_gid(f"{gid}|zero")
        return True
    return False


def _mark_floor(ax, floor: float) -> None:
    ax.axhline(floor, color="0.45", linestyle=":", linewidth=1.0, gid="floor")
    ax.text(
        0.005,
        floor,
        " " + ZERO_NOTE,
        transform=ax.get_yaxis_transform(),
        fontsize=8,
        color="0.3",
        va="bottom",
        ha="left",
    )


def _zero_proxy():
    from matplotlib.lines import Line2D

    return Line2D(
        [],
        [],
        linestyle="none",
        marker="o",
        markersize=10,
        markerfacecolor="none",
        markeredgecolor="0.3",
        label="range = 0 (drawn at the axis floor)",
    )


def _layer_ticks(frames: Iterable[pd.DataFrame]) -> tuple[list[int], list[str]]:
    """Layer positions (``order``) and names; differing names at one position are joined."""
    both = pd.concat([f[["order", "layer"]] for f in frames]).drop_duplicates()
    orders = sorted(int(o) for o in both["order"].unique())
    labels = [
        " / ".join(dict.fromkeys(both.loc[both["order"] == o, "layer"].astype(str))) for o in orders
    ]
    return orders, labels


def _set_layer_axis(ax, orders, labels) -> None:
    ax.set_xticks(orders, labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_xlim(min(orders) - 0.5, max(orders) + 0.5)
    ax.set_xlabel("layer (network order)")


def _epoch_text(epochs: dict[str, int]) -> str:
    values = set(epochs.values())
    if len(values) == 1:
        return f"epoch {values.pop()}"
    return "epochs " + ", ".join(f"{n}: {e}" for n, e in epochs.items())


def _layer_profiles(
    layerwise: pd.DataFrame, cells, epoch: int | None, columns: Sequence[str]
) -> list[dict]:
    _require(layerwise, ["arch", "init", "seed", "epoch", "layer", "order", *columns], "layerwise")
    wanted = _check_cells(layerwise, cells, "layerwise")
    out = []
    for arch, init in wanted:
        name = cell_name(arch, init)
        rows, chosen = _at_epoch(_cell_rows(layerwise, arch, init), epoch, name)
        out.append(
            {
                "name": name,
                "rows": rows,
                "epoch": chosen,
                "stats": {c: _spread(rows, "order", c) for c in columns},
            }
        )
    seed_title, per_cell = _seed_notes([p["rows"] for p in out])
    for prof in out:
        prof["label"] = _cell_label(prof["name"], prof["rows"], per_cell)
        prof["seed_title"] = seed_title
    return out


# --------------------------------------------------------------------------- figures


def figure2_vanishing_act(
    layerwise: pd.DataFrame,
    cells: Sequence[tuple[str, str]],
    paths: Any,
    epoch: int | None = None,
):
    """Paper Fig. 2: clipped activation range per layer (log y), one line per cell.

    The paper's figure shows the single cell ``("DWS_Conv_No_BN", "GlorotUni")``. ``epoch``
    None takes each cell's largest epoch. Ranges of exactly 0 are drawn at a floor a decade
    below the smallest positive value with hollow markers and a dotted "0 plotted at floor"
    line. Returns the (closed) Figure; its one axes holds a line per cell (gid = cell name).
    """
    plt = _pyplot()
    profiles = _layer_profiles(layerwise, cells, epoch, ["activation_range"])
    stats = [p["stats"]["activation_range"] for p in profiles]
    floor = _log_floor([s["mean"] for s in stats] + [s["min"] for s in stats])
    orders, labels = _layer_ticks(p["rows"] for p in profiles)

    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    ax.set_yscale("log")
    any_zero = False
    for prof, st, color in zip(profiles, stats, _palette(len(profiles)), strict=True):
        any_zero |= _draw_series(
            ax,
            st.index,
            st,
            color=color,
            label=prof["label"],
            gid=prof["name"],
            log=True,
            floor=floor,
        )
    handles, legend_labels = ax.get_legend_handles_labels()
    if any_zero:
        _mark_floor(ax, floor)
        handles.append(_zero_proxy())
        legend_labels.append(handles[-1].get_label())
    ax.legend(handles, legend_labels, loc="best", fontsize=8)
    _set_layer_axis(ax, orders, labels)
    ax.set_ylabel("clipped activation range (max − min, log scale)")
    ax.grid(True, which="major", alpha=0.3)
    epochs = {p["name"]: p["epoch"] for p in profiles}
    ax.set_title(
        "Vanishing act: activation ranges along the network\n"
        f"calibrated (percentile-clipped) output range of each layer, {_epoch_text(epochs)}"
        + (f"\n{profiles[0]['seed_title']}" if profiles[0]["seed_title"] else ""),
        fontsize=11,
    )
    return _save(fig, paths)


def figure3_layerwise(
    layerwise: pd.DataFrame,
    cells: Sequence[tuple[str, str]],
    paths: Any,
    epoch: int | None = None,
):
    """Paper Fig. 3: five stacked panels sharing the layer axis, one line per cell.

    Top to bottom: weight ranges, BN-folded weight ranges, BN-folded weight precisions,
    activation ranges, activation precisions. Range panels use a log y axis when their
    positive values span more than 2 decades (zeros then drawn at a floor, hollow markers);
    precision panels are linear on [0, 1]. The paper compares DWS_Conv_With_BN with
    RandUni_Large, HeNorm, HeUni and GlorotUni. Unknown cells raise ValueError naming them.
    Returns the (closed) Figure; ``fig.axes[0..4]`` are the panels, lines' gid = cell name.
    """
    plt = _pyplot()
    columns = [c for c, _, _ in FIG3_PANELS]
    profiles = _layer_profiles(layerwise, cells, epoch, columns)
    orders, labels = _layer_ticks(p["rows"] for p in profiles)
    colors = _palette(len(profiles))

    fig, axes = plt.subplots(
        len(FIG3_PANELS), 1, sharex=True, figsize=(10, 14), layout="constrained"
    )
    any_zero = False
    for ax, (column, title, ylabel) in zip(axes, FIG3_PANELS, strict=True):
        stats = [p["stats"][column] for p in profiles]
        is_range = column.endswith("_range")
        values = [s["mean"] for s in stats] + [s["min"] for s in stats] + [s["max"] for s in stats]
        log = is_range and _span_decades(values) > 2
        floor = _log_floor(values)
        if log:
            ax.set_yscale("log")
        panel_zero = False
        for prof, st, color in zip(profiles, stats, colors, strict=True):
            panel_zero |= _draw_series(
                ax,
                st.index,
                st,
                color=color,
                label=prof["label"],
                gid=prof["name"],
                log=log,
                floor=floor,
            )
        if panel_zero:
            _mark_floor(ax, floor)
            any_zero = True
        if not is_range:
            ax.set_ylim(0, 1.05)
        ax.set_title(title + (", log scale" if log else ""), loc="left", fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes:
        ax.tick_params(axis="x", labelbottom=False)
    axes[-1].tick_params(axis="x", labelbottom=True)
    _set_layer_axis(axes[-1], orders, labels)

    handles = [ln for ln in axes[0].lines if ln.get_gid() in {p["name"] for p in profiles}]
    legend_labels = [h.get_label() for h in handles]
    if any_zero:
        handles.append(_zero_proxy())
        legend_labels.append(handles[-1].get_label())
    fig.legend(handles, legend_labels, loc="outside lower center", ncol=2, fontsize=9)
    epochs = {p["name"]: p["epoch"] for p in profiles}
    fig.suptitle(
        "Layerwise weight and activation statistics, "
        + _join(_epoch_text(epochs), profiles[0]["seed_title"])
        + "\nprecision = Eq. 2: mean channel range / tensor range",
        fontsize=11,
    )
    return _save(fig, paths)


def dynamics_figure(
    dynamics: pd.DataFrame,
    arch: str,
    init: str,
    paths: Any,
    seed: int | None = None,
):
    """Training dynamics of one cell: each layer's weight range and activation range per epoch.

    Two stacked panels (log y), x = epoch (0 = initialization), one line per layer coloured
    by network order (viridis) with the layer names in a shared legend. ``seed`` None: all
    seeds of the cell, mean with a min-max band if there are several. Zeros are drawn at a
    floor with hollow markers. Returns the (closed) Figure; line gid = layer name.
    """
    plt = _pyplot()
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    columns = ["weight_range", "activation_range"]
    _require(dynamics, ["arch", "init", "seed", "epoch", "layer", "order", *columns], "dynamics")
    (arch, init), *_ = _check_cells(dynamics, [(arch, init)], "dynamics")
    name = cell_name(arch, init)
    rows = _cell_rows(dynamics, arch, init)
    if seed is not None:
        rows = rows[rows["seed"] == seed]
        if rows.empty:
            seeds = sorted(int(s) for s in _cell_rows(dynamics, arch, init)["seed"].unique())
            raise ValueError(f"{name}: no rows for seed {seed}; seeds present: {seeds}")
    seeds = sorted(int(s) for s in rows["seed"].unique())
    orders, labels = _layer_ticks([rows])
    cmap = colormaps["viridis"]
    colors = [cmap(i / max(len(orders) - 1, 1)) for i in range(len(orders))]

    fig, axes = plt.subplots(2, 1, sharex=True, figsize=(10, 8), layout="constrained")
    panels = (
        ("weight_range", "Weight range per layer", "weight range (max − min)"),
        ("activation_range", "Activation range per layer (clipped)", "activation range"),
    )
    for ax, (column, title, ylabel) in zip(axes, panels, strict=True):
        per_layer = [_spread(rows[rows["order"] == o], "epoch", column) for o in orders]
        values = [s["mean"] for s in per_layer] + [s["min"] for s in per_layer]
        floor = _log_floor(values)
        ax.set_yscale("log")
        any_zero = False
        for st, label, color in zip(per_layer, labels, colors, strict=True):
            any_zero |= _draw_series(
                ax, st.index, st, color=color, label=label, gid=label, log=True, floor=floor
            )
        if any_zero:
            _mark_floor(ax, floor)
        ax.set_title(title, loc="left", fontsize=10)
        ax.set_ylabel(ylabel + ", log scale")
        ax.grid(True, which="major", alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("epoch (0 = initialization)")
    handles = [ln for ln in axes[0].lines if ln.get_gid() in set(labels)]
    fig.legend(
        handles,
        [h.get_label() for h in handles],
        loc="outside right upper",
        title="layer (network order)",
        fontsize=8,
    )
    seed_text = (
        f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of {len(seeds)} seeds, band = min–max"
    )
    fig.suptitle(f"Training dynamics of {name} ({seed_text})", fontsize=12)
    return _save(fig, paths)


def _format_value(v: float) -> str:
    if v == 0:
        return "0"
    if 1e-2 <= abs(v) < 1e4:
        return f"{v:.3g}"
    return f"{v:.2g}"


def degradation_heatmap(
    metrics: pd.DataFrame,
    paths: Any,
    value: str = "percent_accuracy_decrease",
):
    """Architectures (rows) x initializers (columns) heatmap of ``value``, annotated.

    Each seed counts with its last analysed epoch, as in Table 2 (aggregate.final_epoch).
    Numbers are means over the seeds whose status is ok. A cell with no ok seed is grey with
    its status written ("diverged", "no learn"); a cell whose seeds partly failed gets
    "(k/n ok)" under its number; cells absent from the table are left blank. Rows and columns
    follow ARCH_ORDER and INIT_ORDER (only those present; unknown names appended sorted).
    Returns the (closed) Figure; ``fig.axes[0].texts`` holds the cell annotations.
    """
    plt = _pyplot()
    import seaborn as sns
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    _require(metrics, ["arch", "init", "status", value], "metrics")
    if {"seed", "epoch"} <= set(metrics.columns):
        metrics = final_epoch(metrics)
    rows = _ordered(metrics["arch"].astype(str), ARCH_ORDER)
    cols = _ordered(metrics["init"].astype(str), INIT_ORDER)
    data = pd.DataFrame(np.nan, index=rows, columns=cols)
    texts: dict[tuple[int, int], str] = {}
    failed: set[tuple[int, int]] = set()
    for (arch, init), group in metrics.groupby(["arch", "init"]):
        i, j = rows.index(str(arch)), cols.index(str(init))
        status = group["status"].astype(str)
        ok = group[status == STATUS_OK][value].dropna().astype(float)
        if not ok.empty:
            data.iloc[i, j] = ok.mean()
            text = _format_value(float(ok.mean()))
            if (status != STATUS_OK).any():
                text += f"\n({int((status == STATUS_OK).sum())}/{len(status)} ok)"
            texts[(i, j)] = text
        elif (status != STATUS_OK).any():
            worst = status[status != STATUS_OK].value_counts().index[0]
            texts[(i, j)] = STATUS_TEXT.get(worst, worst)
            failed.add((i, j))

    finite = data.to_numpy()[np.isfinite(data.to_numpy())]
    kwargs: dict[str, Any] = {}
    if finite.size == 0:
        kwargs.update(vmin=0.0, vmax=1.0, cmap="YlOrRd")
    elif (finite < 0).any():
        kwargs.update(cmap="RdBu_r", center=0.0)
    elif (finite > 0).all() and math.log10(finite.max() / finite.min()) > 2:
        kwargs.update(cmap="YlOrRd", norm=LogNorm(finite.min(), finite.max()))
    else:
        kwargs.update(cmap="YlOrRd")
    label = VALUE_LABELS.get(value, value)

    fig, ax = plt.subplots(
        figsize=(2.5 + 0.95 * len(cols), 2.2 + 0.75 * len(rows)), layout="constrained"
    )
    ax.set_facecolor("white")
    sns.heatmap(
        data,
        mask=data.isna(),
        annot=False,
        linewidths=1.0,
        linecolor="white",
        cbar_kws={"label": label},
        ax=ax,
        **kwargs,
    )
    mesh = ax.collections[0]
    for i, j in failed:
        ax.add_patch(Rectangle((j, i), 1, 1, facecolor="0.72", edgecolor="white", linewidth=1.0))
    for (i, j), text in texts.items():
        color = "black"
        if (i, j) not in failed:
            r, g, b, _ = mesh.cmap(mesh.norm(data.iloc[i, j]))
            color = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
        ax.text(
            j + 0.5,
            i + 0.5,
            text,
            ha="center",
            va="center",
            fontsize=9 if "\n" not in text else 8,
            color=color,
            style="italic" if (i, j) in failed else "normal",
        )
    ax.set_xticks(np.arange(len(cols)) + 0.5, cols, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(np.arange(len(rows)) + 0.5, rows, rotation=0)
    ax.set_xlabel("weight initializer")
    ax.set_ylabel("architecture")
    ax.set_title(
        f"8-bit quantization: {label}\n"
        "mean over ok seeds; grey = training diverged / did not learn; blank = not run",
        fontsize=10,
    )
    return _save(fig, paths)


ACCURACY_COLUMNS = {"fp32_accuracy": "fp32", "quint8_accuracy": "quint8"}
# fp32 and quint8 when one epoch is drawn (several epochs: one colour per initializer)
SERIES_COLORS = ("tab:blue", "tab:orange")


def _accuracy_panels(n: int):
    plt = _pyplot()
    ncols = 2 if n > 1 else 1
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(7 * ncols, 3.8 * nrows), layout="constrained", squeeze=False,
        sharey=True,
    )  # fmt: skip
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, list(axes.ravel()[:n])


def _interval_note(summaries: pd.DataFrame, confidence: float) -> str:
    kinds = sorted(set(summaries["Interval"]) - {""})
    if not kinds:
        return "no intervals"
    return f"bars: {confidence:.0%} interval ({' / '.join(kinds)})"


def _errorbar(ax, x, summary: pd.DataFrame, title: str, gid: str, **style):
    y = summary[title].to_numpy(float)
    lo, hi = summary[f"{title} lo"].to_numpy(float), summary[f"{title} hi"].to_numpy(float)
    yerr = np.vstack([np.where(np.isnan(lo), 0, y - lo), np.where(np.isnan(hi), 0, hi - y)])
    container = ax.errorbar(x, y, yerr=yerr, capsize=2.5, elinewidth=1.0, **style)
    container.lines[0].set_gid(gid)


def accuracy_vs_epoch(metrics: pd.DataFrame, paths: Any, confidence: float = 0.95):
    """fp32 (filled circles) vs simulated quint8 (hollow squares) test accuracy (%) of every
    cell, one panel per architecture, with the intervals of Table 2
    (aggregate.summarize_cells: one seed's bootstrap over test images, or t over seeds).

    One analysed epoch: x = initializer (Table 2's order), fp32 and quint8 side by side; a
    cell with no measured seed (diverged) is named at the bottom. Several analysed epochs:
    x = epoch, one colour per initializer, fp32 solid and quint8 dashed. A dotted line marks
    chance (1 / NUM_CLASSES). Returns the (closed) Figure; data lines' gid =
    ``"<cell>|fp32"`` / ``"<cell>|quint8"``, the diverged labels' gid ``"<cell>|diverged"``.
    """
    from quantinit.aggregate import summarize_cells
    from quantinit.registry import NUM_CLASSES

    _require(metrics, ["arch", "init", "seed", "epoch", "status", *ACCURACY_COLUMNS], "metrics")
    epochs = sorted(int(e) for e in metrics["epoch"].unique())
    per_epoch = {
        e: summarize_cells(metrics[metrics["epoch"] == e], ACCURACY_COLUMNS, confidence)
        for e in epochs
    }
    summaries = pd.concat(
        [frame.assign(epoch=e) for e, frame in per_epoch.items()], ignore_index=True
    )
    archs = _ordered(summaries["arch"].astype(str), ARCH_ORDER)
    inits = _ordered(summaries["init"].astype(str), INIT_ORDER)
    colors = dict(zip(inits, _palette(len(inits)), strict=True))
    fig, axes = _accuracy_panels(len(archs))
    single = len(epochs) == 1
    for ax, arch in zip(axes, archs, strict=True):
        panel = summaries[summaries["arch"] == arch]
        for init, rows in panel.groupby("init", sort=False):
            name = cell_name(arch, str(init))
            rows = rows.sort_values("epoch")
            if single:
                x = np.array([inits.index(str(init))], dtype=float)
                if rows["n"].iloc[0] == 0:
                    ax.text(
                        x[0], 1, "diverged", rotation=90, ha="center", va="bottom",
                        fontsize=7, color="0.4", gid=f"{name}|diverged",
                    )  # fmt: skip
                    continue
                series_colors, offsets = SERIES_COLORS, (-0.15, 0.15)
            else:
                x = rows["epoch"].to_numpy(float)
                series_colors, offsets = (colors[str(init)],) * 2, (0.0, 0.0)
            for (title, color, dx, line, marker, face) in zip(
                ACCURACY_COLUMNS.values(), series_colors, offsets, ("-", "--"), "os",
                (True, False), strict=True,
            ):  # fmt: skip
                _errorbar(
                    ax, x + dx, rows, title, f"{name}|{title}", color=color,
                    linestyle="none" if single else line, marker=marker, markersize=5,
                    markerfacecolor=color if face else "none", markeredgecolor=color,
                )  # fmt: skip
        ax.axhline(100 / NUM_CLASSES, color="0.5", linestyle=":", linewidth=1)
        ax.set_title(arch, fontsize=10)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
        if single:
            ax.set_xticks(range(len(inits)), inits, rotation=45, ha="right", fontsize=8)
            ax.set_xlim(-0.6, len(inits) - 0.4)
        else:
            if len(epochs) <= 15:
                ax.set_xticks(epochs)
            ax.set_xlabel("analysed epoch")
    # one accuracy scale for all panels, set once all are drawn (set_ylim ends autoscaling)
    highest = summaries[[f"{t} hi" for t in ACCURACY_COLUMNS.values()]
                        + list(ACCURACY_COLUMNS.values())].max().max()  # fmt: skip
    top = 100 / NUM_CLASSES if pd.isna(highest) else max(highest, 100 / NUM_CLASSES)
    axes[0].set_ylim(0, min(100.0, top * 1.08 + 1))
    from matplotlib.lines import Line2D

    fp32_color, quint8_color = SERIES_COLORS if single else ("0.3", "0.3")
    handles = [
        Line2D([], [], color=fp32_color, marker="o", linestyle="none" if single else "-",
               label="fp32"),
        Line2D([], [], color=quint8_color, marker="s", markerfacecolor="none",
               linestyle="none" if single else "--", label="quint8 (simulated)"),
        Line2D([], [], color="0.5", linestyle=":", label="chance"),
    ]  # fmt: skip
    if not single:
        handles += [Line2D([], [], color=colors[i], linewidth=3, label=i) for i in inits]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    what = f"epoch {epochs[0]}" if single else f"epochs {', '.join(map(str, epochs))}"
    seeds = sorted(set(summaries["Seeds"]))
    seed_note = (
        f"{seeds[0]} seed{'s' if seeds[0] > 1 else ''} per cell"
        if len(seeds) == 1
        else "seeds per cell differ (Table 2's Seeds column)"
    )
    fig.suptitle(
        f"fp32 (filled circles) vs simulated quint8 (hollow squares) test accuracy, {what}\n"
        + _join(_interval_note(summaries, confidence), seed_note),
        fontsize=11,
    )
    return _save(fig, paths)


def axis_figure(table: pd.DataFrame, paths: Any, confidence: float = 0.95, axis: str = "Scheme"):
    """Percent accuracy decrease of every cell at every value of one axis of the study
    (quantization scheme or training variant), as a grid: one row of panels per value (the
    table's order), one column per architecture, x = the initializers in Table 2's order,
    with each value's interval (aggregate.axis_table: one seed's bootstrap over test
    images, or t over seeds); one y scale for all panels.

    Only trained cells (Status ok) are drawn as points: a not-learning model's "decrease" is
    noise around chance and would set the scale. Other cells are named in place ("no learn",
    "diverged"). Returns the (closed) Figure; data lines' gid ``"<value>|<cell>"``, the
    status labels' ``"<value>|<cell>|<status>"``.
    """
    from quantinit.aggregate import RANKED_BY

    plt = _pyplot()
    _require(table, [axis, "Settings", "arch", "init", "Status", "n", RANKED_BY], axis.lower())
    schemes = list(dict.fromkeys(table[axis]))
    archs = _ordered(table["arch"].astype(str), ARCH_ORDER)
    inits = _ordered(table["init"].astype(str), INIT_ORDER)
    fig, axes = plt.subplots(
        len(schemes), len(archs), figsize=(3.2 * len(archs) + 1, 2.6 * len(schemes) + 1.2),
        layout="constrained", squeeze=False, sharex=True, sharey=True,
    )  # fmt: skip
    for row, scheme in enumerate(schemes):
        rows = table[table[axis] == scheme]
        for col, arch in enumerate(archs):
            ax = axes[row, col]
            for _, cell in rows[rows["arch"] == arch].iterrows():
                init = str(cell["init"])
                x = float(inits.index(init))
                name = f"{scheme}|{cell_name(arch, init)}"
                if cell["Status"] == STATUS_OK and pd.notna(cell[RANKED_BY]):
                    _errorbar(
                        ax, np.array([x]), cell.to_frame().T, RANKED_BY, name,
                        color="tab:blue", marker="o", markersize=4, linestyle="none",
                    )  # fmt: skip
                else:
                    status = str(cell["Status"])
                    ax.text(
                        x, 0.02, STATUS_TEXT.get(status, status.split(" ")[0]), rotation=90,
                        ha="center", va="bottom", fontsize=6, color="0.45",
                        transform=ax.get_xaxis_transform(), gid=f"{name}|{status}",
                    )  # fmt: skip
            ax.axhline(0, color="0.5", linewidth=0.8)
            ax.grid(True, alpha=0.3)
            if row == 0:
                ax.set_title(arch, fontsize=9)
            if col == 0:
                settings = rows["Settings"].iloc[0]
                ax.set_ylabel(f"{scheme}\n({settings})\ndecrease (% of fp32)", fontsize=8)
            ax.set_xticks(range(len(inits)), inits, rotation=60, ha="right", fontsize=7)
            ax.set_xlim(-0.6, len(inits) - 0.4)
    fig.suptitle(
        f"Percent accuracy decrease fp32 → quantized, per {axis.lower()} (rows) and architecture "
        "(columns)\n" + _join(_interval_note(table, confidence), "only trained cells are drawn"),
        fontsize=10,
    )
    return _save(fig, paths)


def sensitivity_figure(
    layerwise: pd.DataFrame,
    quant_error: pd.DataFrame,
    sensitivity: pd.DataFrame,
    arch: str,
    init: str,
    paths: Any,
):
    """Where quantization hurts, for one cell: four panels on the layer axis.

    The clipped activation range (log); rmse / step of each layer's output tensor and of its
    kernel (0.289 = pure rounding noise); the SQNR (dB) of each layer's output, local (only
    that layer quantized), accumulated (the whole network) and of the deployed TFLite int8
    model (where there is one), all against the float network; the accuracy lost when only
    that layer is quantized (bars), so a reader sees whether the widest range is the layer
    that hurts. Means over seeds at each seed's last analysed epoch; an infinite SQNR (no
    error) is drawn at the panel's top as a hollow marker.
    """
    tables = {"layerwise": layerwise, "quant_error": quant_error, "sensitivity": sensitivity}
    columns = {
        "layerwise": ["activation_range"],
        "quant_error": [
            "rmse_over_scale",
            "weight_rmse_over_scale",
            "sqnr_local_db",
            "sqnr_accumulated_db",
            "tflite_sqnr_db",
        ],
        "sensitivity": ["only_drop"],
    }
    means = []
    for name, frame in tables.items():
        _require(frame, ["arch", "init", "seed", "epoch", "layer", "order", *columns[name]], name)
        _check_cells(frame, [(arch, init)], name)
        rows = _cell_rows(frame, arch, init)
        rows = rows[rows["epoch"] == rows.groupby("seed")["epoch"].transform("max")]
        means.append(rows.groupby(["order", "layer"], as_index=False)[columns[name]].mean())
    profile = means[0].merge(means[1], on=["order", "layer"]).merge(means[2], on=["order", "layer"])
    profile = profile.sort_values("order")
    orders, labels = profile["order"].to_list(), profile["layer"].to_list()

    plt = _pyplot()
    fig, axes = plt.subplots(4, 1, figsize=(max(7, 0.5 * len(orders) + 3), 10), sharex=True)
    ranges = profile["activation_range"].to_numpy(float)
    floor = _log_floor([ranges])
    axes[0].plot(orders, np.where(ranges > 0, ranges, floor), "o-", gid="activation_range")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("activation range\n(clipped)")
    axes[0].set_title("Activation ranges")
    axes[1].plot(orders, profile["rmse_over_scale"], "o-", label="output tensor", gid="activation")
    axes[1].plot(orders, profile["weight_rmse_over_scale"], "s--", label="kernel", gid="weight")
    axes[1].axhline(1 / np.sqrt(12), color="grey", linestyle=":", label="rounding noise 0.289")
    axes[1].set_ylabel("rmse / step")
    axes[1].set_title("Quantization error per layer (in quantization steps)")
    axes[1].legend(loc="upper right")
    sqnr = profile[["sqnr_local_db", "sqnr_accumulated_db", "tflite_sqnr_db"]].to_numpy(float)
    finite = sqnr[np.isfinite(sqnr)]
    top = float(finite.max()) + 5 if finite.size else 60.0
    sqnr_lines = {
        "sqnr_local_db": ("o-", "local (only this layer)"),
        "sqnr_accumulated_db": ("s--", "accumulated (whole network)"),
        "tflite_sqnr_db": ("^:", "TFLite int8 model (deployed)"),
    }
    if profile["tflite_sqnr_db"].isna().all():  # no TFLite model, or LiteRT refused it
        del sqnr_lines["tflite_sqnr_db"]
    for column, (style, label) in sqnr_lines.items():
        values = profile[column].to_numpy(float)
        drawn = np.where(np.isfinite(values), values, np.nan)
        (line,) = axes[2].plot(orders, drawn, style, label=label, gid=column)
        infinite = np.isposinf(values)
        if infinite.any():
            axes[2].plot(
                np.asarray(orders)[infinite], np.full(int(infinite.sum()), top), "o",
                markerfacecolor="none", color=line.get_color(), gid=f"{column}|inf",
            )  # fmt: skip
    axes[2].set_ylabel("SQNR (dB)")
    axes[2].set_title("Signal-to-quantization-noise ratio of each layer's output")
    axes[2].legend(loc="upper right")
    axes[3].bar(orders, profile["only_drop"], color="tab:red", gid="only_drop")
    axes[3].axhline(0, color="black", linewidth=0.8)
    axes[3].set_ylabel("accuracy drop\n(percentage points)")
    axes[3].set_title("Accuracy lost when only this layer is quantized")
    _set_layer_axis(axes[3], orders, labels)
    fig.suptitle(f"Where quantization hurts: {cell_name(arch, init)}")
    fig.tight_layout()
    return _save(fig, paths)
