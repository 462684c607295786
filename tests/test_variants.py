"""Training variants: their settings and paths, the variants table, the ranking agreement
across variants and the paper's claims per variant."""

import numpy as np
import pandas as pd
import pytest

from quantinit.aggregate import SCHEME_COLUMNS, axis_markdown, ranking_agreement, variants_table
from quantinit.claims import SUPPORTED, claims_by_variant, claims_by_variant_markdown
from quantinit.variants import (
    analyzed_epochs,
    describe,
    variant_dirs,
    variant_training,
)

TRAINING = {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9, "epochs": 4,
            "analyze_epochs": None, "augmentation": {"enabled": True, "zoom": 0.1}}  # fmt: skip
ADAM = {"name": "adam_1e-3", "optimizer": "adam", "learning_rate": 0.001}
NO_AUG = {"name": "no_aug", "augmentation": {"enabled": False}, "epochs": 6}
VARIANTS = {"reference": "paper", "overrides": [ADAM, NO_AUG]}


def test_the_reference_keeps_todays_paths_and_settings():
    assert variant_dirs({"reference": "paper", "overrides": []}) == {"": "paper"}
    assert variant_dirs(VARIANTS) == {
        "": "paper", "variants/adam_1e-3/": "adam_1e-3", "variants/no_aug/": "no_aug"
    }  # fmt: skip
    assert variant_training(TRAINING, VARIANTS, "paper") == TRAINING


def test_a_variant_overrides_only_its_keys():
    adam = variant_training(TRAINING, VARIANTS, "adam_1e-3")
    assert adam == {**TRAINING, "optimizer": "adam", "learning_rate": 0.001}
    no_aug = variant_training(TRAINING, VARIANTS, "no_aug")
    # a nested override merges key by key: zoom stays the training section's
    assert no_aug["augmentation"] == {"enabled": False, "zoom": 0.1}
    assert TRAINING["augmentation"]["enabled"] is True  # the section itself is untouched
    # without analyze_epochs, each variant analyses its own last epoch
    assert analyzed_epochs(no_aug) == [6] and analyzed_epochs(adam) == [4]
    assert analyzed_epochs({**no_aug, "analyze_epochs": [2, 4, 2]}) == [2, 4]
    with pytest.raises(ValueError, match="unknown training variant 'sgd'.*paper, adam_1e-3"):
        variant_training(TRAINING, VARIANTS, "sgd")


def test_describe_names_what_a_variant_changes():
    assert describe(ADAM) == "optimizer adam, learning_rate 0.001"
    assert describe(NO_AUG) == "augmentation.enabled False, epochs 6"
    assert describe({}) == "the training section"


INITS = ["GlorotUni", "HeUni", "HeNorm", "RandUni_Small", "RandNorm_Small"]


def metrics_row(variant, arch, init, fp32, quantized, status="ok"):
    row = {"variant": variant, "arch": arch, "init": init, "seed": 0, "epoch": 4,
           "scheme": "quint8", "status": status, "fp32_accuracy": fp32,
           "quint8_accuracy": quantized,
           "percent_accuracy_decrease": 100 * (fp32 - quantized) / fp32,
           "quint8_minus_fp32": quantized - fp32, "qmse": 0.0, "qce": 0.0,
           "weight_only_accuracy": quantized, "activation_only_accuracy": fp32,
           "tflite_int8_accuracy": quantized, "tflite_error": None}  # fmt: skip
    for metric in SCHEME_COLUMNS:
        row[f"{metric}_lo"], row[f"{metric}_hi"] = row[metric] - 1, row[metric] + 1
    return row


@pytest.fixture
def metrics():
    """Regular_Conv_No_BN: under paper only Glorot/He train (the paper's exploding claim);
    under adam every initializer trains. DWS_Conv_With_BN: adam keeps paper's order."""
    rows = []
    for k, init in enumerate(INITS):
        rows.append(metrics_row("paper", "DWS_Conv_With_BN", init, 60.0, 60.0 - k))
        rows.append(metrics_row("adam_1e-3", "DWS_Conv_With_BN", init, 65.0, 64.0 - 2 * k))
        diverges = init.startswith("Rand")
        rows.append(metrics_row("paper", "Regular_Conv_No_BN", init, np.nan if diverges else 50.0,
                                np.nan if diverges else 49.0,
                                "diverged" if diverges else "ok"))  # fmt: skip
        rows.append(metrics_row("adam_1e-3", "Regular_Conv_No_BN", init, 55.0, 54.0))
    return pd.DataFrame(rows)


def test_variants_table_and_agreement(metrics):
    table = variants_table(metrics, {"reference": "paper", "overrides": [ADAM]})
    assert list(dict.fromkeys(table.Variant)) == ["paper", "adam_1e-3"]
    assert dict(zip(table.Variant, table.Settings, strict=True)) == {
        "paper": "the training section", "adam_1e-3": "optimizer adam, learning_rate 0.001"
    }  # fmt: skip
    adam = table[table.Variant == "adam_1e-3"].set_index("Network")
    assert adam.loc["DWS_Conv_With_BN_HeUni", "FP32 Accuracy"] == 65.0
    agreement = ranking_agreement(table, "paper", axis="Variant").set_index("Architecture")
    assert agreement.loc["DWS_Conv_With_BN", "Kendall tau"] == pytest.approx(1.0)
    assert agreement.loc["DWS_Conv_With_BN", "Variant"] == "adam_1e-3"
    # three initializers trained in both under Regular_Conv_No_BN; adam ties them all
    assert agreement.loc["Regular_Conv_No_BN", "Initializers"] == 3
    text = axis_markdown(table, ranking_agreement(table, "paper", axis="Variant"), "Variant")
    assert "## adam_1e-3: optimizer adam, learning_rate 0.001" in text
    assert "Best (variant)" in text
    with pytest.raises(ValueError, match="no metrics of variant 'no_aug'"):
        variants_table(metrics, VARIANTS)


def test_claims_are_judged_per_variant(metrics):
    layerwise = pd.DataFrame(columns=["variant", "arch", "init", "seed", "epoch"])
    claims = claims_by_variant(metrics, layerwise, ["paper", "adam_1e-3"], 0.95)
    exploding = claims[claims.claim == "exploding"].set_index("variant")
    # paper: the Rand* cells diverge, as the paper says; adam: none diverges
    assert exploding.loc["paper", "verdict"] == SUPPORTED
    assert exploding.loc["paper", "value"] == 1.0
    assert exploding.loc["adam_1e-3", "value"] == pytest.approx(3 / 5)
    text = claims_by_variant_markdown(claims)
    assert "| claim | paper | adam_1e-3 |" in text
    assert "| exploding | supported: 1 | inconclusive: 0.6 |" in text
