"""The README's account of a finished study, written from its Table 2, claims and
quantization_split tables.

Every number the README quotes about the quick preset lives in one block between BEGIN and
END, and that block is only ever written by this module (``make docs-figures``):

    python -m quantinit.summary TABLE2_CSV CLAIMS_CSV SPLIT_CSV README.md

rewrites the block in README.md from the three CSVs the workflow wrote (the Makefile passes
the copies it keeps in docs/, so that a test can check the README against them without a
run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from quantinit.aggregate import (
    SPLIT_COLUMNS,
    TABLE2_COLUMNS,
    TFLITE_ERROR,
    cell_name,
    table2_markdown,
)
from quantinit.claims import claims_markdown
from quantinit.io import atomic_path
from quantinit.registry import STATUS_DIVERGED, STATUS_NOT_LEARNING, STATUS_OK

BEGIN = "<!-- study-summary:begin (written by `make docs-figures`; do not edit) -->"
END = "<!-- study-summary:end -->"
# Table 2 rows the README shows: the paper's vanishing act, its best quantizing cell, its He
# claim, an exploding and a surviving Regular_Conv_No_BN cell; the best fp32 cell is added.
EXCERPT = (
    cell_name("DWS_Conv_No_BN", "GlorotUni"),
    cell_name("DWS_Conv_With_BN", "RandUni_Large"),
    cell_name("DWS_Conv_With_BN", "HeNorm"),
    cell_name("Regular_Conv_No_BN", "RandNorm_Large"),
    cell_name("Regular_Conv_No_BN", "GlorotUni"),
)
FP32 = TABLE2_COLUMNS["fp32_accuracy"]
DIFFERENCE = TABLE2_COLUMNS["quint8_minus_fp32"]


def _names(table: pd.DataFrame, arch: str, status: str) -> list[str]:
    rows = table[(table["arch"] == arch) & (table["Status"] == status)]
    return list(rows["init"])


def _listing(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names) or "none"
    return ", ".join(names[:-1]) + " and " + names[-1]


def _value(row: pd.Series, title: str) -> str:
    return f"{row[title]:.1f}% [{row[f'{title} lo']:.1f}, {row[f'{title} hi']:.1f}]"


def outcome_sentences(table: pd.DataFrame) -> str:
    """Counts of trained / not learning / diverged cells, which cells failed, the best fp32
    cells, and how many quint8 - fp32 intervals exclude 0."""
    statuses = table["Status"].value_counts()
    ok, not_learning, diverged = (
        int(statuses.get(s, 0)) for s in (STATUS_OK, STATUS_NOT_LEARNING, STATUS_DIVERGED)
    )
    mixed = len(table) - ok - not_learning - diverged
    dws = table[table["arch"] == "DWS_Conv_No_BN"]
    dws_failed = int((dws["Status"] != STATUS_OK).sum())
    exploded = _names(table, "Regular_Conv_No_BN", STATUS_DIVERGED)
    trained = table[table["Status"] == STATUS_OK]
    best = trained.sort_values(FP32, ascending=False, kind="stable").head(3)
    measured = trained.dropna(subset=[f"{DIFFERENCE} lo", f"{DIFFERENCE} hi"])
    better = int((measured[f"{DIFFERENCE} lo"] > 0).sum())
    worse = int((measured[f"{DIFFERENCE} hi"] < 0).sum())
    parts = [
        f"{ok} of {len(table)} cells trained, {not_learning} did not learn and {diverged} "
        "diverged" + (f" ({mixed} with mixed seeds)" if mixed else "") + ".",
        f"{dws_failed} of the {len(dws)} DWS_Conv_No_BN cells did not learn or diverged (the "
        'paper: "most of the DWS_Conv_No_BN experiments also did not learn"); '
        f"Regular_Conv_No_BN diverged with {_listing(exploded)} (the paper's exploding "
        "gradients).",
        "The best fp32 accuracies: "
        + ", ".join(f"{row.Network} {_value(row, FP32)}" for _, row in best.iterrows())
        + ".",
        f"Of the {len(measured)} trained cells, the simulated quint8 model is more accurate "
        f"than fp32 in {better} and less accurate in {worse} beyond the 95% interval of the "
        f"`{DIFFERENCE}` column; in the other {len(measured) - better - worse} the interval "
        "holds 0.",
    ]
    return " ".join(parts)


def attribution_sentence(split: pd.DataFrame) -> str:
    """How far quantizing only the weights, only the activations, or both moves the trained
    cells' accuracy from fp32 (quantization_split), and which partial model is the closer
    to the full one."""
    trained = split[split["Status"] == STATUS_OK]
    fp32 = trained[SPLIT_COLUMNS["fp32_accuracy"]]
    moves = {
        side: trained[SPLIT_COLUMNS[column]] - fp32
        for side, column in (
            ("both", "quint8_accuracy"),
            ("weights", "weight_only_accuracy"),
            ("activations", "activation_only_accuracy"),
        )
    }

    def spread(values):
        return (
            f"{values.mean():+.2f} points on average ({values.min():+.2f} to {values.max():+.2f})"
        )

    closer = int(
        (
            (moves["activations"] - moves["both"]).abs() < (moves["weights"] - moves["both"]).abs()
        ).sum()
    )
    return (
        "Where the quint8 - fp32 differences come from (`quantization_split.md`): over the "
        f"{len(trained)} trained cells, quantizing only the weights moves the accuracy by "
        f"{spread(moves['weights'])}, only the activations by {spread(moves['activations'])}, "
        f"and both by {spread(moves['both'])}; the activation-only model is the closer to "
        f"the full one in {closer} of them."
    )


def excerpt(table: pd.DataFrame) -> pd.DataFrame:
    """EXCERPT's rows present in the table plus the best trained fp32 cell, Table 2's order."""
    trained = table[table["Status"] == STATUS_OK]
    wanted = set(EXCERPT)
    if not trained.empty:
        wanted.add(trained.loc[trained[FP32].idxmax(), "Network"])
    return table[table["Network"].isin(wanted)]


def study_summary(table: pd.DataFrame, claims: pd.DataFrame, split: pd.DataFrame) -> str:
    """The README block (without its markers) from Table 2, the claims and the
    quantization_split table."""
    claim_lines = claims_markdown(claims).splitlines()[2:]
    return "\n".join(
        [
            outcome_sentences(table),
            "",
            attribution_sentence(split),
            "",
            "The paper's claims at this run's precision "
            "([docs/quick-claims.md](docs/quick-claims.md), from `claims.md`):",
            "",
            *claim_lines,
            "",
            "An excerpt of `table2.md` (all rows: [docs/quick-table2.md](docs/quick-table2.md)):",
            "",
            table2_markdown(excerpt(table)).rstrip("\n"),
        ]
    )


def replace_block(text: str, block: str) -> str:
    """`text` with the part between BEGIN and END replaced by `block`."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"expected one {BEGIN!r} ... {END!r} block")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def read_block(text: str) -> str:
    """The block between BEGIN and END (without the markers' newlines)."""
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def read_table2_csv(path) -> pd.DataFrame:
    """Table 2 or quantization_split as the table2 rule writes their CSVs (empty text cells
    come back as "")."""
    table = pd.read_csv(path)
    for column in ("Interval", "Status", TFLITE_ERROR):
        if column in table:
            table[column] = table[column].fillna("")
    return table


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        raise SystemExit(
            "usage: python -m quantinit.summary TABLE2_CSV CLAIMS_CSV SPLIT_CSV README.md"
        )
    table_csv, claims_csv, split_csv, readme = map(Path, argv)
    table, split = read_table2_csv(table_csv), read_table2_csv(split_csv)
    for path, frame, columns in ((table_csv, table, TABLE2_COLUMNS),
                                 (split_csv, split, SPLIT_COLUMNS)):  # fmt: skip
        if (
            frame.empty
            or not np.isin(["Network", "Status", *columns.values()], frame.columns).all()
        ):
            raise SystemExit(f"{path}: not a table of {list(columns.values())} with rows")
    summary = study_summary(table, pd.read_csv(claims_csv), split)
    text = replace_block(readme.read_text(), summary)
    with atomic_path(readme) as tmp:
        Path(tmp).write_text(text)
    print(f"rewrote the study summary in {readme}")


if __name__ == "__main__":
    main(sys.argv[1:])
