"""Which of the paper's qualitative claims a run supports, at that run's precision.

Each claim is a statement of Yun and Wong's sections 4-5, the statistic this run measures for
it (with its interval where it has one) and a verdict: supported, contradicted or
inconclusive (or not measured when the study lacks the cells). The verdicts read Table 2
(aggregate.table2: values with intervals over test images or seeds) and, for the vanishing
act, the layerwise table. pandas only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from quantinit.aggregate import final_epoch, table2, to_markdown
from quantinit.intervals import seed_interval
from quantinit.registry import (
    INITIALIZERS,
    STATUS_DIVERGED,
    STATUS_NOT_LEARNING,
    STATUS_OK,
)

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED)

DIFFERENCE = "QUINT8 - FP32"  # Table 2's column: quint8 - fp32 accuracy, points
# The vanishing act: the last conv block's clipped activation range below this share of the
# first conv layer's is "exceedingly small" (supported); above VANISHING_NONE it is not.
VANISHING = 0.01
VANISHING_NONE = 0.1


def _cells(table: pd.DataFrame, arch: str) -> pd.DataFrame:
    return table[table["arch"] == arch].set_index("init")


def _row(claim, statement, statistic, verdict, why, value=np.nan, lo=np.nan, hi=np.nan):
    return {
        "claim": claim,
        "statement": statement,
        "statistic": statistic,
        "value": float(value),
        "lo": float(lo),
        "hi": float(hi),
        "verdict": verdict,
        "why": why,
    }


def _majority_verdict(agree: int, total: int) -> str:
    if agree == total:
        return SUPPORTED
    return CONTRADICTED if agree * 2 < total else INCONCLUSIVE


def exploding(table: pd.DataFrame) -> dict:
    claim = "exploding"
    statement = "Regular_Conv_No_BN diverges (exploding gradients) except with Glorot and He"
    statistic = "share of Regular_Conv_No_BN cells that diverge exactly when not Glorot/He"
    cells = _cells(table, "Regular_Conv_No_BN")
    if cells.empty:
        return _row(claim, statement, statistic, NOT_MEASURED, "no Regular_Conv_No_BN cells")
    expected = {init: INITIALIZERS[init].family not in ("Glorot", "He") for init in cells.index}
    diverged = {init: status == STATUS_DIVERGED for init, status in cells["Status"].items()}
    wrong = sorted(init for init in cells.index if diverged[init] != expected[init])
    agree = len(cells) - len(wrong)
    why = f"{agree} of {len(cells)} cells as the paper says" + (
        f"; not: {', '.join(wrong)}" if wrong else ""
    )
    verdict = _majority_verdict(agree, len(cells))
    return _row(claim, statement, statistic, verdict, why, value=agree / len(cells))


def not_learning(table: pd.DataFrame) -> dict:
    claim = "dws_no_bn_does_not_learn"
    statement = "most DWS_Conv_No_BN networks do not learn (vanishing gradients)"
    statistic = "share of DWS_Conv_No_BN cells that did not learn or diverged"
    cells = _cells(table, "DWS_Conv_No_BN")
    if cells.empty:
        return _row(claim, statement, statistic, NOT_MEASURED, "no DWS_Conv_No_BN cells")
    failed = cells["Status"].isin([STATUS_NOT_LEARNING, STATUS_DIVERGED])
    share = float(failed.mean())
    verdict = SUPPORTED if share > 0.5 else CONTRADICTED if share < 0.5 else INCONCLUSIVE
    why = f"{int(failed.sum())} of {len(cells)} cells did not learn"
    return _row(claim, statement, statistic, verdict, why, value=share)


def batchnorm_worsens_quint8(table: pd.DataFrame, confidence: float) -> dict:
    claim = "batchnorm_worsens_quint8"
    statement = "quantized accuracy usually worsens when BatchNorm layers are introduced"
    statistic = (
        "mean over (conv kind, initializer) pairs that trained both ways of "
        "(quint8 - fp32 with BN) - (quint8 - fp32 without BN), points; t-interval over pairs"
    )
    measured = table[table["Status"] == STATUS_OK].set_index(["arch", "init"])[DIFFERENCE]
    differences = []
    for conv in ("Regular_Conv", "DWS_Conv"):
        for init in INITIALIZERS:
            with_bn, without = (f"{conv}_With_BN", init), (f"{conv}_No_BN", init)
            if with_bn in measured.index and without in measured.index:
                differences.append(measured[with_bn] - measured[without])
    differences = np.array(differences, dtype=float)
    differences = differences[~np.isnan(differences)]
    if len(differences) < 2:
        why = f"{len(differences)} pair(s) trained both with and without BN; 2 needed"
        return _row(claim, statement, statistic, NOT_MEASURED, why)
    lo, hi = seed_interval(differences, confidence)
    verdict = SUPPORTED if hi < 0 else CONTRADICTED if lo > 0 else INCONCLUSIVE
    worse = int((differences < 0).sum())
    why = f"{len(differences)} pairs; BN's quint8 - fp32 lower in {worse}"
    return _row(claim, statement, statistic, verdict, why, differences.mean(), lo, hi)


def _difference(cells: pd.DataFrame, init: str) -> tuple[float, float, float]:
    row = cells.loc[init]
    return row[DIFFERENCE], row[f"{DIFFERENCE} lo"], row[f"{DIFFERENCE} hi"]


def randuni_large_quantizes_best(table: pd.DataFrame) -> dict:
    claim = "dws_bn_randuni_large_best"
    statement = "DWS_Conv_With_BN with RandUni_Large quantizes markedly better than the others"
    statistic = "quint8 - fp32 of DWS_Conv_With_BN_RandUni_Large, points, with its interval"
    cells = _cells(table, "DWS_Conv_With_BN")
    cells = cells[cells["Status"] == STATUS_OK].dropna(subset=[DIFFERENCE])
    if "RandUni_Large" not in cells.index or len(cells) < 2:
        why = "needs DWS_Conv_With_BN_RandUni_Large and another trained DWS_Conv_With_BN cell"
        return _row(claim, statement, statistic, NOT_MEASURED, why)
    value, lo, hi = _difference(cells, "RandUni_Large")
    others = cells.drop(index="RandUni_Large")
    best_other = others[DIFFERENCE].idxmax()
    if lo > others[f"{DIFFERENCE} hi"].max():
        verdict, why = SUPPORTED, f"its interval lies above every other cell's (next: {best_other})"
    elif hi < others[f"{DIFFERENCE} lo"].max():
        verdict = CONTRADICTED
        why = f"{best_other}'s interval lies above it"
    else:
        verdict = INCONCLUSIVE
        why = f"its interval overlaps the best other cell's ({best_other})"
    return _row(claim, statement, statistic, verdict, why, value, lo, hi)


def he_hurts_dws_bn(table: pd.DataFrame) -> dict:
    claim = "he_hurts_dws_bn_quint8"
    statement = "He initializers cause a stark quint8 accuracy drop in DWS_Conv_With_BN"
    statistic = (
        "mean quint8 - fp32 of DWS_Conv_With_BN HeUni and HeNorm, points (interval: from the "
        "lower of their lower ends to the higher of their upper ends) vs the other cells' median"
    )
    cells = _cells(table, "DWS_Conv_With_BN")
    cells = cells[cells["Status"] == STATUS_OK].dropna(subset=[DIFFERENCE])
    he = [init for init in ("HeUni", "HeNorm") if init in cells.index]
    others = cells.drop(index=he)
    if not he or others.empty:
        why = "needs trained DWS_Conv_With_BN He cells and other initializers"
        return _row(claim, statement, statistic, NOT_MEASURED, why)
    median = float(others[DIFFERENCE].median())
    values = [_difference(cells, init) for init in he]
    lo, hi = min(v[1] for v in values), max(v[2] for v in values)
    if all(v[2] < median for v in values):
        verdict, why = SUPPORTED, f"every He interval lies below the others' median {median:.2f}"
    elif all(v[1] > median for v in values):
        verdict, why = CONTRADICTED, f"every He interval lies above the others' median {median:.2f}"
    else:
        verdict, why = INCONCLUSIVE, f"a He interval holds the others' median {median:.2f}"
    return _row(claim, statement, statistic, verdict, why, np.mean([v[0] for v in values]), lo, hi)


def vanishing_act(table: pd.DataFrame, layerwise: pd.DataFrame) -> dict:
    claim = "vanishing_act"
    statement = (
        "DWS_Conv_No_BN_GlorotUni does not learn because the activations of its last "
        "depthwise-separable block are exceedingly small (Figure 2)"
    )
    statistic = (
        "last conv block's clipped activation range / the first conv layer's, mean over seeds "
        f"(supported below {VANISHING:g} with the cell not learning; contradicted from "
        f"{VANISHING_NONE:g} or if it learned)"
    )
    cell = table[(table["arch"] == "DWS_Conv_No_BN") & (table["init"] == "GlorotUni")]
    rows = layerwise[(layerwise["arch"] == "DWS_Conv_No_BN") & (layerwise["init"] == "GlorotUni")]
    if cell.empty or rows.empty:
        return _row(claim, statement, statistic, NOT_MEASURED, "no DWS_Conv_No_BN_GlorotUni")
    ratios = []
    for _, seed_rows in final_epoch(rows).groupby("seed"):
        convs = seed_rows[seed_rows["kind"] != "dense"].sort_values("order")
        first, last = convs["activation_range"].iloc[0], convs["activation_range"].iloc[-1]
        ratios.append(last / first if first > 0 else np.nan)
    ratio = float(np.nanmean(ratios)) if not np.all(np.isnan(ratios)) else np.nan
    status = cell["Status"].iloc[0]
    learned = status == STATUS_OK
    if np.isnan(ratio):
        verdict, why = INCONCLUSIVE, "no activation range measured"
    elif ratio < VANISHING and not learned:
        verdict, why = SUPPORTED, f"last block's range is {ratio:.2g} of the first's; {status}"
    elif ratio >= VANISHING_NONE or learned:
        verdict, why = CONTRADICTED, f"last block's range is {ratio:.2g} of the first's; {status}"
    else:
        verdict, why = INCONCLUSIVE, f"last block's range is {ratio:.2g} of the first's; {status}"
    return _row(claim, statement, statistic, verdict, why, value=ratio)


def claims_table(table: pd.DataFrame, layerwise: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """One row per claim: claim, statement, statistic, value, lo, hi, verdict, why."""
    return pd.DataFrame(
        [
            exploding(table),
            not_learning(table),
            batchnorm_worsens_quint8(table, confidence),
            randuni_large_quantizes_best(table),
            he_hurts_dws_bn(table),
            vanishing_act(table, layerwise),
        ]
    )


def claims_markdown(claims: pd.DataFrame) -> str:
    """The claims as a Markdown list: verdict, statement, measured value and why."""
    lines = ["# The paper's claims in this run", ""]
    for row in claims.itertuples():
        value = "" if np.isnan(row.value) else f"{row.value:.3g}"
        if value and not (np.isnan(row.lo) or np.isnan(row.hi)):
            value += f" [{row.lo:.3g}, {row.hi:.3g}]"
        measured = f" Measured: {row.statistic} = {value}." if value else ""
        lines.append(f"- **{row.verdict}**: {row.statement}.{measured} {row.why}.")
    return "\n".join(lines) + "\n"


def claims_by_variant(
    metrics: pd.DataFrame, layerwise: pd.DataFrame, variants: list[str], confidence: float
) -> pd.DataFrame:
    """The paper's claims (claims.claims_table on each variant's Table 2 and layerwise rows),
    one block of rows per variant, with a `variant` column first."""
    parts = []
    for variant in variants:
        table = table2(metrics[metrics["variant"] == variant], True, confidence)
        claims = claims_table(table, layerwise[layerwise["variant"] == variant], confidence)
        claims.insert(0, "variant", variant)
        parts.append(claims)
    return pd.concat(parts, ignore_index=True)


def claims_by_variant_markdown(claims: pd.DataFrame) -> str:
    """One row per claim, one column per variant: its verdict and measured value."""

    def cell(row) -> str:
        if np.isnan(row.value):
            return row.verdict
        interval = "" if np.isnan(row.lo) else f" [{row.lo:.3g}, {row.hi:.3g}]"
        return f"{row.verdict}: {row.value:.3g}{interval}"

    verdicts = claims.assign(cell=[cell(row) for row in claims.itertuples()]).pivot(
        index="claim", columns="variant", values="cell"
    )
    verdicts = verdicts.reindex(index=list(dict.fromkeys(claims["claim"])))
    verdicts = verdicts[list(dict.fromkeys(claims["variant"]))].reset_index()
    return "## The paper's claims per variant\n\n" + to_markdown(verdicts)
