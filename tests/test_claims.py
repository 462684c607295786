"""The claims' verdicts on Table 2s constructed here."""

import math

import numpy as np
import pandas as pd
import pytest

from quantinit.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_MEASURED,
    SUPPORTED,
    batchnorm_worsens_quint8,
    claims_markdown,
    claims_table,
    exploding,
    he_hurts_dws_bn,
    not_learning,
    randuni_large_quantizes_best,
    vanishing_act,
)
from quantinit.registry import INITIALIZERS

D = "QUINT8 - FP32"


def cell(arch, init, status="ok", diff=0.0, half=1.0):
    return {"arch": arch, "init": init, "Network": f"{arch}_{init}", "Status": status,
            D: diff, f"{D} lo": diff - half, f"{D} hi": diff + half}  # fmt: skip


def table(*rows):
    return pd.DataFrame(list(rows))


def papers_regular_no_bn():
    return [
        cell("Regular_Conv_No_BN", init, "ok" if spec.family in ("Glorot", "He") else "diverged")
        for init, spec in INITIALIZERS.items()
    ]


def test_exploding_is_supported_only_when_every_cell_agrees():
    assert exploding(table(*papers_regular_no_bn()))["verdict"] == SUPPORTED
    rows = papers_regular_no_bn()
    rows[0]["Status"] = "ok"  # RandNorm_Large trained
    result = exploding(table(*rows))
    assert result["verdict"] == INCONCLUSIVE and "RandNorm_Large" in result["why"]
    assert result["value"] == pytest.approx(11 / 12)
    all_train = [dict(row, Status="ok") for row in rows]
    assert exploding(table(*all_train))["verdict"] == CONTRADICTED  # 4 of 12 agree
    assert exploding(table(cell("DWS_Conv_No_BN", "HeUni")))["verdict"] == NOT_MEASURED


def test_not_learning_counts_the_dws_no_bn_cells():
    inits = list(INITIALIZERS)
    failing = [cell("DWS_Conv_No_BN", i, "not_learning" if k < 8 else "ok") for k, i in
               enumerate(inits)]  # fmt: skip
    assert not_learning(table(*failing))["verdict"] == SUPPORTED
    learning = [dict(row, Status="ok") for row in failing]
    assert not_learning(table(*learning))["verdict"] == CONTRADICTED


def bn_pairs(with_bn_diffs, no_bn_diffs):
    inits = list(INITIALIZERS)
    return table(
        *(cell("Regular_Conv_With_BN", inits[k], diff=d) for k, d in enumerate(with_bn_diffs)),
        *(cell("Regular_Conv_No_BN", inits[k], diff=d) for k, d in enumerate(no_bn_diffs)),
    )


def test_batchnorm_claim_is_a_t_interval_over_matched_pairs():
    # pair differences -3, -4, -5: mean -4, sd 1, sem 0.577; t(0.975, 2) = 4.3027
    result = batchnorm_worsens_quint8(bn_pairs([-3, -5, -6], [0, -1, -1]), 0.95)
    assert result["value"] == pytest.approx(-4.0)
    assert result["lo"] == pytest.approx(-4 - 4.3027 / math.sqrt(3), abs=1e-3)
    assert result["verdict"] == SUPPORTED  # hi = -1.52 < 0
    # quint8 beats fp32 with BN: the opposite
    assert batchnorm_worsens_quint8(bn_pairs([3, 5, 6], [0, 1, 1]), 0.95)["verdict"] == (
        CONTRADICTED
    )
    assert batchnorm_worsens_quint8(bn_pairs([-3, 2, 0], [0, 0, 0]), 0.95)["verdict"] == (
        INCONCLUSIVE
    )
    one_pair = batchnorm_worsens_quint8(bn_pairs([-3], [0]), 0.95)
    assert one_pair["verdict"] == NOT_MEASURED and np.isnan(one_pair["value"])


def dws_bn(**diffs):
    return table(*(cell("DWS_Conv_With_BN", init, diff=d) for init, d in diffs.items()))


def test_randuni_large_must_stand_clear_of_every_other_cell():
    clear = dws_bn(RandUni_Large=-1.0, GlorotUni=-5.0, HeUni=-20.0)
    assert randuni_large_quantizes_best(clear)["verdict"] == SUPPORTED
    overlapping = dws_bn(RandUni_Large=-1.0, GlorotUni=-2.5, HeUni=-20.0)  # intervals of +-1
    assert randuni_large_quantizes_best(overlapping)["verdict"] == INCONCLUSIVE
    beaten = dws_bn(RandUni_Large=-10.0, GlorotUni=-2.0)
    result = randuni_large_quantizes_best(beaten)
    assert result["verdict"] == CONTRADICTED and "GlorotUni" in result["why"]
    assert randuni_large_quantizes_best(dws_bn(GlorotUni=-2.0))["verdict"] == NOT_MEASURED


def test_he_claim_compares_with_the_other_cells_median():
    others = dict(GlorotUni=-1.0, GlorotNorm=-2.0, RandUni_Large=0.0)
    assert he_hurts_dws_bn(dws_bn(HeUni=-20.0, HeNorm=-25.0, **others))["verdict"] == SUPPORTED
    assert he_hurts_dws_bn(dws_bn(HeUni=3.0, HeNorm=4.0, **others))["verdict"] == CONTRADICTED
    mixed = he_hurts_dws_bn(dws_bn(HeUni=-20.0, HeNorm=-1.5, **others))
    assert mixed["verdict"] == INCONCLUSIVE
    assert (mixed["lo"], mixed["hi"]) == (-21.0, -0.5)


def layerwise(first, last, seeds=(0,)):
    rows = []
    for seed in seeds:
        for order, (kind, value) in enumerate(
            [("conv", first), ("depthwise", first / 2), ("pointwise", last), ("dense", 1.0)]
        ):
            rows.append(dict(arch="DWS_Conv_No_BN", init="GlorotUni", seed=seed, epoch=4,
                             order=order, kind=kind, activation_range=value))  # fmt: skip
    return pd.DataFrame(rows)


def test_vanishing_act_reads_the_first_and_last_conv_layers():
    stuck = table(cell("DWS_Conv_No_BN", "GlorotUni", "not_learning"))
    result = vanishing_act(stuck, layerwise(2.0, 0.001))
    assert result["verdict"] == SUPPORTED and result["value"] == pytest.approx(0.0005)
    assert vanishing_act(stuck, layerwise(2.0, 1.0))["verdict"] == CONTRADICTED
    assert vanishing_act(stuck, layerwise(2.0, 0.1))["verdict"] == INCONCLUSIVE  # 0.05
    learned = table(cell("DWS_Conv_No_BN", "GlorotUni", "ok"))
    assert vanishing_act(learned, layerwise(2.0, 0.001))["verdict"] == CONTRADICTED
    assert vanishing_act(stuck, layerwise(2.0, 0.0)[:0])["verdict"] == NOT_MEASURED


def test_claims_table_and_markdown_list_every_claim():
    claims = claims_table(table(*papers_regular_no_bn()), layerwise(2.0, 0.001), 0.95)
    assert len(claims) == 6 and claims.claim.is_unique
    assert claims.set_index("claim").loc["exploding", "verdict"] == SUPPORTED
    text = claims_markdown(claims)
    assert text.count("\n- **") == 6 and "**not measured**" in text
