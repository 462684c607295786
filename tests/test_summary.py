"""The README's study summary: made from Table 2 and the claims, and kept equal to docs/."""

import re

import numpy as np
import pandas as pd
import pytest
from test_aggregate import metric_row

from quantinit.aggregate import SPLIT_COLUMNS, quantization_split, table2, table2_markdown
from quantinit.claims import claims_markdown
from quantinit.summary import (
    BEGIN,
    END,
    attribution_sentence,
    excerpt,
    outcome_sentences,
    read_block,
    read_table2_csv,
    replace_block,
    study_summary,
)

from conftest import REPO


def quick_like_metrics():
    rows = [
        # quint8 better beyond the interval (diff +3, half-width 2), worse (diff -4), neither
        metric_row("DWS_Conv_With_BN", "RandUni_Large", 0, fp32=30.0, quint8=33.0),
        metric_row("DWS_Conv_With_BN", "HeNorm", 0, fp32=28.0, quint8=24.0),
        metric_row("Regular_Conv_With_BN", "HeUni", 0, fp32=35.5, quint8=36.0),
        metric_row("Regular_Conv_No_BN", "GlorotUni", 0, fp32=20.0, quint8=19.0),
        metric_row("Regular_Conv_No_BN", "RandNorm_Large", 0, status="diverged"),
        metric_row("Regular_Conv_No_BN", "RandNorm_Med", 0, status="diverged"),
        metric_row("DWS_Conv_No_BN", "GlorotUni", 0, "not_learning", fp32=10.0, quint8=10.0),
        metric_row("DWS_Conv_No_BN", "HeUni", 0, fp32=15.0, quint8=15.0),
    ]
    return pd.DataFrame(rows)


def split_frame():
    metrics = quick_like_metrics()
    metrics["weight_only_accuracy"] = metrics.fp32_accuracy + 0.1  # weights barely matter
    metrics["activation_only_accuracy"] = metrics.quint8_accuracy - 0.2
    metrics["weight_only_qce"] = metrics["activation_only_qce"] = 1.0
    return quantization_split(metrics)


def claims_frame():
    return pd.DataFrame(
        [
            {"claim": "a", "statement": "first claim", "statistic": "share", "value": 0.5,
             "lo": np.nan, "hi": np.nan, "verdict": "inconclusive", "why": "6 of 12"},
            {"claim": "b", "statement": "second claim", "statistic": "mean", "value": 2.25,
             "lo": 0.9, "hi": 3.5, "verdict": "contradicted", "why": "9 pairs"},
        ]
    )  # fmt: skip


def test_outcome_sentences_count_and_name_what_happened():
    text = outcome_sentences(table2(quick_like_metrics()))
    assert text.startswith("5 of 8 cells trained, 1 did not learn and 2 diverged.")
    assert "1 of the 2 DWS_Conv_No_BN cells did not learn or diverged" in text
    assert "Regular_Conv_No_BN diverged with RandNorm_Large and RandNorm_Med" in text
    # best three fp32 cells, highest first, each with its interval (metric_row: +-2)
    assert (
        "The best fp32 accuracies: Regular_Conv_With_BN_HeUni 35.5% [33.5, 37.5], "
        "DWS_Conv_With_BN_RandUni_Large 30.0% [28.0, 32.0], "
        "DWS_Conv_With_BN_HeNorm 28.0% [26.0, 30.0]."
    ) in text
    # +3 and -4 exclude 0 (+-2), +0.5, -1 and 0 do not
    assert "more accurate than fp32 in 1 and less accurate in 1" in text
    assert "in the other 3 the interval holds 0" in text


def test_excerpt_keeps_the_chosen_rows_and_the_best_cell():
    rows = excerpt(table2(quick_like_metrics()))["Network"].tolist()
    assert rows == [
        "DWS_Conv_No_BN_GlorotUni",
        "DWS_Conv_With_BN_HeNorm",
        "DWS_Conv_With_BN_RandUni_Large",
        "Regular_Conv_No_BN_GlorotUni",
        "Regular_Conv_No_BN_RandNorm_Large",
        "Regular_Conv_With_BN_HeUni",  # the best fp32 cell, not in EXCERPT
    ]


def test_attribution_sentence_says_which_side_moves_the_accuracy():
    text = attribution_sentence(split_frame())
    # trained cells' quint8 - fp32: +3, -4, +0.5, -1, 0 (quick_like_metrics)
    assert "over the 5 trained cells" in text
    assert "only the weights moves the accuracy by +0.10 points on average (+0.10 to +0.10)" in text
    assert "only the activations by -0.50 points on average (-4.20 to +2.80)" in text
    assert "and both by -0.30 points on average (-4.00 to +3.00)" in text
    # A-only is 0.2 from the full model, W-only |0.1 - diff|: closer only where diff = 0
    assert "the activation-only model is the closer to the full one in 4 of them" in text


def test_summary_quotes_the_claims_and_table_rows():
    table = table2(quick_like_metrics())
    text = study_summary(table, claims_frame(), split_frame())
    for line in claims_markdown(claims_frame()).splitlines()[2:]:
        assert line in text.splitlines()
    for line in table2_markdown(excerpt(table)).splitlines():
        assert line in text.splitlines()


def test_block_is_replaced_between_its_markers_only():
    text = f"intro\n{BEGIN}\nold\n{END}\noutro\n"
    new = replace_block(text, "new\nlines")
    assert new == f"intro\n{BEGIN}\nnew\nlines\n{END}\noutro\n"
    assert read_block(new) == "new\nlines"
    with pytest.raises(ValueError, match="expected one"):
        replace_block("no markers", "x")
    with pytest.raises(ValueError, match="expected one"):
        replace_block(f"{END}\n{BEGIN}", "x")


def test_table2_round_trips_through_its_csv(tmp_path):
    table = table2(quick_like_metrics())
    table.to_csv(tmp_path / "table2.csv", index=False)
    assert table2_markdown(read_table2_csv(tmp_path / "table2.csv")) == table2_markdown(table)


# The README, docs/ and the numbers they quote -------------------------------------------


def docs_tables():
    table = read_table2_csv(REPO / "docs" / "quick-table2.csv")
    claims = pd.read_csv(REPO / "docs" / "quick-claims.csv")
    split = read_table2_csv(REPO / "docs" / "quick-quantization-split.csv")
    return table, claims, split


def test_docs_markdown_is_what_the_workflow_writes_from_the_docs_csvs():
    table, claims, split = docs_tables()
    assert (REPO / "docs" / "quick-table2.md").read_text() == table2_markdown(table)
    assert (REPO / "docs" / "quick-claims.md").read_text() == claims_markdown(claims)
    split_markdown = table2_markdown(split, SPLIT_COLUMNS)
    assert (REPO / "docs" / "quick-quantization-split.md").read_text() == split_markdown


def test_readme_quotes_the_numbers_of_docs():
    """The README's study block is study_summary of docs/quick-table2.csv,
    docs/quick-claims.csv and docs/quick-quantization-split.csv (make docs-figures writes
    all of them from one run)."""
    table, claims, split = docs_tables()
    readme = (REPO / "README.md").read_text()
    assert read_block(readme) == study_summary(table, claims, split)
    # and no number about the quick run's cells lives outside the block
    outside = readme.replace(read_block(readme), "")
    quick_section = outside.split("## The quick preset", 1)[1].split("\n## ", 1)[0]
    assert not re.search(r"\d+\.\d+%", quick_section), "a quoted accuracy outside the block"
