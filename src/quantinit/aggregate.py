"""Study-level tables: the paper's Table 2 from every cell's metrics, and paper vs ours.

pandas only. Rows are named as the paper names them (arch_init) and sorted as its Table 2:
architectures alphabetically, initializers Glorot, ModGlorot, He, RandNorm, RandUni.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from quantinit.registry import STATUS_DIVERGED, STATUS_OK, table2_order

ARCH_ORDER, INIT_ORDER = table2_order()
# metrics.parquet column -> Table 2 column
TABLE2_COLUMNS = {
    "fp32_accuracy": "FP32 Accuracy",
    "quint8_accuracy": "QUINT8 Accuracy",
    "qmse": "QMSE",
    "qce": "QCE",
    "percent_accuracy_decrease": "Percent Accuracy Decrease",
    "tflite_int8_accuracy": "TFLite INT8 Accuracy",
    "quint8_minus_fp32": "QUINT8 - FP32",
}
# metrics.parquet column -> quantization_split column: the full simulated model beside the
# same with only its weights or only its activations quantized (intervals.PARTIAL_MODELS)
SPLIT_COLUMNS = {
    "fp32_accuracy": "FP32 Accuracy",
    "quint8_accuracy": "QUINT8 Accuracy",
    "weight_only_accuracy": "W-only Accuracy",
    "activation_only_accuracy": "A-only Accuracy",
    "qce": "QCE",
    "weight_only_qce": "W-only QCE",
    "activation_only_qce": "A-only QCE",
}
# metrics.parquet column -> schemes column: each scheme's simulated model ("quint8_*"
# columns hold the row's scheme's model, whatever its bits), its two halves and TFLite
SCHEME_COLUMNS = {
    "fp32_accuracy": "FP32 Accuracy",
    "quint8_accuracy": "Quantized Accuracy",
    "percent_accuracy_decrease": "Percent Accuracy Decrease",
    "quint8_minus_fp32": "Quantized - FP32",
    "weight_only_accuracy": "W-only Accuracy",
    "activation_only_accuracy": "A-only Accuracy",
    "tflite_int8_accuracy": "TFLite INT8 Accuracy",
}
TFLITE_ERROR = "TFLite error"
# Where the intervals come from: one seed's bootstrap over test images, or seeds
INTERVAL_IMAGES = "bootstrap over test images"
INTERVAL_SEEDS = "t over seeds"
PAPER_COLUMNS = list(TABLE2_COLUMNS)[:5]


def cell_name(arch: str, init: str) -> str:
    return f"{arch}_{init}"


def split_cell_name(name: str) -> tuple[str, str]:
    """(arch, init) of a paper-style row name such as DWS_Conv_With_BN_RandUni_Large."""
    for arch in ARCH_ORDER:
        if name.startswith(arch + "_") and name[len(arch) + 1 :] in INIT_ORDER:
            return arch, name[len(arch) + 1 :]
    raise ValueError(f"not an <architecture>_<initializer> name: {name!r}")


def _sort_key(frame: pd.DataFrame) -> pd.Series:
    arch_rank = frame["arch"].map({a: i for i, a in enumerate(ARCH_ORDER)})
    init_rank = frame["init"].map({n: i for i, n in enumerate(INIT_ORDER)})
    return arch_rank * len(INIT_ORDER) + init_rank


def final_epoch(metrics: pd.DataFrame) -> pd.DataFrame:
    """Each (arch, init, seed)'s row at its last analysed epoch."""
    last = metrics.groupby(["arch", "init", "seed"])["epoch"].transform("max")
    return metrics[metrics["epoch"] == last]


def _status_summary(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    n = len(statuses)
    return ", ".join(f"{status} ({count}/{n})" for status, count in counts.items())


def summarize_cells(
    metrics: pd.DataFrame, columns: dict[str, str], confidence: float = 0.95
) -> pd.DataFrame:
    """One row per (arch, init) of `metrics` (one row per seed: callers choose the epoch),
    in Table 2's order.

    For each metrics column -> title in `columns`: the mean over the seeds that were
    measured (not diverged, with an fp32 accuracy), its standard deviation (ddof 1; NaN for
    one seed) as "<title> std", and its interval as "<title> lo" / "<title> hi": with one
    measured seed that seed's bootstrap interval over test images (metrics' <column>_lo/_hi,
    NaN where the metrics have none), with several the Student-t interval at `confidence`
    over the seeds' values (quantinit.intervals.seed_interval). Also Network, n (measured
    seeds), Interval (what the intervals are over), Seeds (all seeds) and Status (e.g. "ok"
    or "ok (2/3), diverged (1/3)").
    """
    from quantinit.intervals import seed_interval

    rows = []
    for (arch, init), group in metrics.groupby(["arch", "init"], sort=False):
        row = {"arch": arch, "init": init, "Network": cell_name(arch, init)}
        measured = group[group["status"] != STATUS_DIVERGED]
        measured = measured[measured["fp32_accuracy"].notna()]
        for column, title in columns.items():
            values = measured[column].astype(float).dropna()
            row[title] = values.mean() if len(values) else np.nan
            row[f"{title} std"] = values.std(ddof=1) if len(values) > 1 else np.nan
            if len(measured) == 1:
                one = measured.iloc[0]
                bounds = (one.get(f"{column}_lo", np.nan), one.get(f"{column}_hi", np.nan))
            else:
                bounds = seed_interval(values, confidence)
            row[f"{title} lo"], row[f"{title} hi"] = (float(b) for b in bounds)
        row["n"] = len(measured)
        row["Interval"] = (
            INTERVAL_IMAGES if len(measured) == 1 else INTERVAL_SEEDS if len(measured) else ""
        )
        row["Seeds"] = len(group)
        row["Status"] = _status_summary(group["status"])
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.iloc[np.argsort(_sort_key(table).to_numpy(), kind="stable")]
    return table.reset_index(drop=True)


def _summarize_with_tflite_errors(
    last: pd.DataFrame, columns: dict, confidence: float
) -> pd.DataFrame:
    """summarize_cells, and TFLITE_ERROR: why LiteRT could not run a cell's int8 model (its
    seeds' distinct reasons; "" where it ran)."""
    table = summarize_cells(last, columns, confidence)
    if not table.empty and "tflite_error" in last:
        errors = last.dropna(subset=["tflite_error"]).groupby(["arch", "init"])["tflite_error"]
        reasons = errors.agg(lambda texts: "; ".join(dict.fromkeys(texts)))
        keys = pd.MultiIndex.from_frame(table[["arch", "init"]])
        table[TFLITE_ERROR] = reasons.reindex(keys).fillna("").to_numpy()
    return table


def table2(
    metrics: pd.DataFrame, include_failed: bool = True, confidence: float = 0.95
) -> pd.DataFrame:
    """The paper's Table 2 from the concatenated metrics of every cell: summarize_cells of
    each seed's last analysed epoch over TABLE2_COLUMNS, and TFLITE_ERROR: why LiteRT could
    not run a cell's int8 model ("" where it ran). Cells whose every seed diverged or did not
    learn are kept with their status unless include_failed is False (the paper omitted them).
    """
    table = _summarize_with_tflite_errors(final_epoch(metrics), TABLE2_COLUMNS, confidence)
    if not table.empty and not include_failed:
        table = table[table["Status"] == STATUS_OK].reset_index(drop=True)
    return table


def quantization_split(metrics: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Where each cell's quantization error comes from: summarize_cells of each seed's last
    analysed epoch over SPLIT_COLUMNS (fp32, full quint8, weight-only and activation-only
    accuracy and QCE, each with its interval)."""
    return summarize_cells(final_epoch(metrics), SPLIT_COLUMNS, confidence)


def axis_table(
    metrics: pd.DataFrame, axis: str, values: list[tuple[str, str]], confidence: float = 0.95
) -> pd.DataFrame:
    """Every cell at every value of one axis of the study (metrics' column `axis`: "scheme"
    or "variant"): summarize_cells of each seed's last analysed epoch over SCHEME_COLUMNS,
    per value, with columns <Axis> (the value's name) and Settings (its description), the
    values in the given order (config order), cells in Table 2's. `values` is a list of
    (name, description). A value without rows in `metrics` is an error (its jobs did not
    run)."""
    parts = []
    for name, settings in values:
        rows = metrics[metrics[axis] == name]
        if rows.empty:
            raise ValueError(
                f"no metrics of {axis} {name!r}; the metrics hold {sorted(metrics[axis].unique())}"
            )
        table = _summarize_with_tflite_errors(final_epoch(rows), SCHEME_COLUMNS, confidence)
        table.insert(0, axis.capitalize(), name)
        table.insert(1, "Settings", settings)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def schemes_table(
    metrics: pd.DataFrame, schemes: list[dict], confidence: float = 0.95
) -> pd.DataFrame:
    """axis_table over the quantization schemes (config quantization.schemes, in order)."""
    from quantinit.schemes import describe

    values = [(scheme["name"], describe(scheme)) for scheme in schemes]
    return axis_table(metrics, "scheme", values, confidence)


def variants_table(metrics: pd.DataFrame, variants: dict, confidence: float = 0.95) -> pd.DataFrame:
    """axis_table over the training variants (config `variants`): the reference, then the
    overrides in config order, each described by what it changes."""
    from quantinit.variants import describe

    values = [(variants["reference"], describe({}))]
    values += [(entry["name"], describe(entry)) for entry in variants["overrides"]]
    return axis_table(metrics, "variant", values, confidence)


RANKED_BY = "Percent Accuracy Decrease"


def ranking_agreement(table: pd.DataFrame, reference: str, axis: str = "Scheme") -> pd.DataFrame:
    """Whether the initializers rank alike at each value of an axis (axis_table's <Axis>
    column) and at `reference`: per architecture and other value, Kendall's tau-b
    (scipy.stats.kendalltau) between the two values' percent accuracy decreases over the
    initializers trained in both (Status ok; not-learning and diverged cells are left out),
    its two-sided p-value against unrelated orders (it ignores the decreases' own
    intervals), and each value's best initializer (the smallest decrease). Tau and p are NaN
    with fewer than three initializers."""
    from scipy.stats import kendalltau

    ok = table[(table["Status"] == STATUS_OK) & table[RANKED_BY].notna()]
    base = ok[ok[axis] == reference].set_index(["arch", "init"])[RANKED_BY]
    rows = []
    for value in dict.fromkeys(table[axis]):
        if value == reference:
            continue
        other = ok[ok[axis] == value].set_index(["arch", "init"])[RANKED_BY]
        both = pd.concat([base, other], axis=1, keys=["reference", "other"]).dropna()
        for arch in _ordered_archs(table):
            pair = both[both.index.get_level_values("arch") == arch]
            tau = kendalltau(pair["reference"], pair["other"]) if len(pair) > 2 else None
            rows.append(
                {
                    "Architecture": arch,
                    axis: value,
                    "Reference": reference,
                    "Initializers": len(pair),
                    "Kendall tau": np.nan if tau is None else float(tau.statistic),
                    "p": np.nan if tau is None else float(tau.pvalue),
                    "Best (reference)": _best_init(pair["reference"]),
                    f"Best ({axis.lower()})": _best_init(pair["other"]),
                }
            )
    return pd.DataFrame(rows)


def _ordered_archs(table: pd.DataFrame) -> list[str]:
    present = set(table["arch"])
    return [arch for arch in ARCH_ORDER if arch in present]


def _best_init(decreases: pd.Series) -> str:
    return "" if decreases.empty else decreases.idxmin()[1]


def axis_markdown(table: pd.DataFrame, agreement: pd.DataFrame, axis: str = "Scheme") -> str:
    """axis_table as Markdown (each value with its interval; one section per value of the
    axis) and the ranking agreement below it."""
    parts = []
    for value, rows in table.groupby(axis, sort=False):
        parts.append(f"## {value}: {rows['Settings'].iloc[0]}\n")
        parts.append(table2_markdown(rows.reset_index(drop=True), SCHEME_COLUMNS))
    if not agreement.empty:
        parts.append(
            f"## Do the initializers rank alike?\n\nKendall's tau-b between the two "
            f"{axis.lower()}s' percent accuracy decreases over the initializers trained in "
            "both (1: the same order; 0: unrelated; -1: reversed), and its two-sided p-value "
            "against unrelated orders; best = the smallest decrease.\n"
        )
        parts.append(to_markdown(agreement, digits={"Kendall tau": 2, "p": 3}))
    return "\n".join(parts)


def read_paper_table2(path) -> pd.DataFrame:
    """The paper's Table 2 shipped in reference/paper_table2.csv (comment lines: citation)."""
    return pd.read_csv(path, comment="#")


def comparison(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Paper and ours side by side, matched by row name, with ours - paper differences.

    Every row of either table appears: a cell the paper omitted (it diverged or did not
    learn there) has empty paper columns, and a paper row this study lacks empty ours.
    """
    paper = paper.rename(columns={"network": "Network"})
    mine = ours[["Network", "Status", *(TABLE2_COLUMNS[c] for c in PAPER_COLUMNS)]]
    merged = paper.merge(mine, on="Network", how="outer", indicator=True)
    out = pd.DataFrame({"Network": merged["Network"]})
    out["In"] = merged["_merge"].map(
        {"both": "both", "left_only": "paper only", "right_only": "ours only"}
    )
    out["Status"] = merged["Status"]
    for column in PAPER_COLUMNS:
        title = TABLE2_COLUMNS[column]
        out[f"{title} (paper)"] = merged[column]
        out[f"{title} (ours)"] = merged[title]
        out[f"{title} (diff)"] = merged[title] - merged[column]
    names = out["Network"].map(split_cell_name)
    out["arch"], out["init"] = names.str[0], names.str[1]
    out = out.iloc[np.argsort(_sort_key(out).to_numpy(), kind="stable")]
    return out.drop(columns=["arch", "init"]).reset_index(drop=True)


def comparison_markdown(side_by_side: pd.DataFrame) -> str:
    """The comparison as a screen-wide Markdown table: per row its status and, per metric,
    "paper / ours" ("–" where a side has no value); the differences are in the CSV."""
    shown = side_by_side[["Network", "Status"]].copy()
    for column in PAPER_COLUMNS:
        title = TABLE2_COLUMNS[column]
        places = 3 if column in ("qmse", "qce") else 2
        pairs = zip(side_by_side[f"{title} (paper)"], side_by_side[f"{title} (ours)"], strict=True)
        shown[f"{title}: paper / ours"] = [
            " / ".join("–" if pd.isna(v) else f"{v:.{places}f}" for v in pair) for pair in pairs
        ]
    return to_markdown(shown)


def _format(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(frame: pd.DataFrame, digits: dict | None = None, default_digits: int = 2) -> str:
    """A GitHub-flavoured Markdown table; floats rounded per column (`digits`)."""
    digits = digits or {}
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        cells = [
            _format(value, digits.get(column, default_digits))
            for column, value in zip(frame.columns, row, strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def with_interval(value, lo, hi, places: int) -> str:
    """ "26.50 [23.80, 29.30]"; the value alone without an interval, "" without a value."""
    if pd.isna(value):
        return ""
    text = f"{value:.{places}f}"
    return text if pd.isna(lo) or pd.isna(hi) else f"{text} [{lo:.{places}f}, {hi:.{places}f}]"


def table2_markdown(table: pd.DataFrame, columns: dict | None = None) -> str:
    """Table 2 as the paper prints it, each value with its interval: `mean [lo, hi]`; n and
    what the intervals are over (test images or seeds) in the last columns. `columns`: the
    summarize_cells columns shown (default TABLE2_COLUMNS; e.g. SPLIT_COLUMNS)."""
    shown = pd.DataFrame({"Network": table["Network"]})
    for title in (columns or TABLE2_COLUMNS).values():
        places = 3 if title.endswith(("QMSE", "QCE")) else 2
        shown[title] = [
            with_interval(value, lo, hi, places)
            for value, lo, hi in zip(
                table[title], table[f"{title} lo"], table[f"{title} hi"], strict=True
            )
        ]
    title = TABLE2_COLUMNS["tflite_int8_accuracy"]
    if TFLITE_ERROR in table and title in shown:  # the reason in place of a missing accuracy
        missing = (shown[title] == "") & (table[TFLITE_ERROR] != "")
        shown.loc[missing, title] = "not run: " + table.loc[missing, TFLITE_ERROR]
    shown["n"] = table["n"]
    shown["Interval"] = table["Interval"]
    shown["Status"] = table["Status"]
    return to_markdown(shown)


def most_sensitive_table(sensitivity: pd.DataFrame) -> pd.DataFrame:
    """For each (arch, init): the layer whose own quantization costs the most accuracy.

    Per layer, the accuracy drop ("only" that layer quantized) is averaged over seeds at each
    seed's last analysed epoch; the table names the costliest layer, its drop (percentage
    points), its QCE, the runner-up, and how much keeping the costliest layer float would
    recover from the fully quantized model (all_but_gain).
    """
    last = sensitivity.groupby(["arch", "init", "seed"])["epoch"].transform("max")
    rows = []
    for (arch, init), group in sensitivity[sensitivity["epoch"] == last].groupby(
        ["arch", "init"], sort=False
    ):
        per_layer = group.groupby("layer")[["only_drop", "only_qce", "all_but_gain"]].mean()
        per_layer = per_layer.dropna(subset=["only_drop"])
        row = {"arch": arch, "init": init, "Network": cell_name(arch, init)}
        if per_layer.empty:
            row["Status"] = _status_summary(group.drop_duplicates("seed")["status"])
            rows.append(row)
            continue
        ranked = per_layer.sort_values(["only_drop", "only_qce"], ascending=False)
        top = ranked.iloc[0]
        row.update(
            {
                "Most sensitive layer": ranked.index[0],
                "Accuracy drop": top["only_drop"],
                "QCE": top["only_qce"],
                "Recovered if kept float": top["all_but_gain"],
                "Runner-up": ranked.index[1] if len(ranked) > 1 else None,
                "Status": _status_summary(group.drop_duplicates("seed")["status"]),
            }
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.iloc[np.argsort(_sort_key(table).to_numpy(), kind="stable")]
    return table.drop(columns=["arch", "init"]).reset_index(drop=True)
