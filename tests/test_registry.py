"""The study's names live in quantinit.registry; every other list must agree with it."""

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from quantinit import aggregate, initializers, models
from quantinit.config_checks import study_schema, study_schema_file
from quantinit.registry import (
    ARCHITECTURES,
    INITIALIZERS,
    PAPER_ARCHITECTURES,
    Initializer,
    architecture,
    initializer,
    table2_order,
)

from conftest import REPO

SCHEMA = study_schema()


def test_the_schema_allows_exactly_the_registered_names():
    properties, cell = SCHEMA["properties"], SCHEMA["$defs"]["cell"]["properties"]
    for names, registered in (
        (properties["architectures"]["items"]["enum"], ARCHITECTURES),
        (properties["architectures"]["default"], PAPER_ARCHITECTURES),
        (cell["arch"]["enum"], ARCHITECTURES),
        (properties["initializers"]["items"]["enum"], INITIALIZERS),
        (properties["initializers"]["default"], INITIALIZERS),
        (cell["init"]["enum"], INITIALIZERS),
    ):
        assert names == list(registered)


def test_the_schema_defaults_are_table_1s_settings():
    settings = SCHEMA["properties"]["initializer_settings"]["properties"]
    assert {name: entry["default"] for name, entry in settings.items()} == {
        "RandNorm_Large": {"stddev": 1.0}, "RandNorm_Med": {"stddev": 0.5},
        "RandNorm_Small": {"stddev": 0.1}, "RandUni_Large": {"limit": 1.0},
        "RandUni_Med": {"limit": 0.5}, "RandUni_Small": {"limit": 0.25},
        "ModGlorotUni_Large": {"C": 1296}, "ModGlorotUni_Med": {"C": 36},
    }  # fmt: skip


def test_a_registered_initializer_is_all_the_schema_needs(monkeypatch, tmp_path):
    """One registry entry: the schema allows the new name, fills its settings' defaults and
    refuses settings it does not have."""
    extra = Initializer("RandNorm_Tiny", "RandNorm", "RandomNormal", {"stddev": 0.01})
    monkeypatch.setitem(INITIALIZERS, extra.name, extra)
    schema = study_schema()
    assert schema["properties"]["initializers"]["items"]["enum"][-1] == "RandNorm_Tiny"
    assert schema["$defs"]["cell"]["properties"]["init"]["enum"][-1] == "RandNorm_Tiny"
    config = {"initializers": ["RandNorm_Tiny"]}
    with study_schema_file() as path:
        validate(config, path)
        assert config["initializer_settings"]["RandNorm_Tiny"] == {"stddev": 0.01}
        with pytest.raises(WorkflowError, match="limit"):
            validate({"initializer_settings": {"RandNorm_Tiny": {"limit": 1.0}}}, path)


def test_an_unregistered_name_is_refused_by_the_schema():
    with study_schema_file() as path, pytest.raises(WorkflowError, match="HeUniform"):
        validate({"initializers": ["HeUniform"]}, path)


def test_the_full_study_config_lists_the_papers_architectures_and_every_initializer():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert config["architectures"] == PAPER_ARCHITECTURES
    assert PAPER_ARCHITECTURES == [
        "Regular_Conv_With_BN", "Regular_Conv_No_BN", "DWS_Conv_With_BN", "DWS_Conv_No_BN"
    ]  # fmt: skip
    assert config["initializers"] == list(INITIALIZERS)


def test_the_library_reads_the_registry():
    assert initializers.INITIALIZER_NAMES == tuple(INITIALIZERS)
    assert (aggregate.ARCH_ORDER, aggregate.INIT_ORDER) == table2_order()


def test_table2_order_is_the_papers():
    """As the paper's Table 2 lists its rows (reference/paper_table2.csv, its own order)."""
    import pandas as pd

    paper = pd.read_csv(REPO / "reference" / "paper_table2.csv", comment="#")
    archs, inits = table2_order()
    rank = {
        f"{arch}_{init}": (a, i) for a, arch in enumerate(archs) for i, init in enumerate(inits)
    }
    names = [name for name in paper.iloc[:, 0] if name in rank]
    assert len(names) == len(paper) and names == sorted(names, key=rank.__getitem__)


def test_traits_of_each_architecture_match_its_name():
    prefixes = {"Regular_Conv": "conv", "DWS_Conv": "separable", "Residual": "residual",
                "InvResidual": "inverted_residual"}  # fmt: skip
    for name, spec in ARCHITECTURES.items():
        assert spec.block == prefixes[name.rsplit("_", 2)[0]]
        assert spec.separable == name.startswith("DWS") and spec.batchnorm == name.endswith(
            "With_BN"
        )
        assert models.architecture_traits(name) == (spec.separable, spec.batchnorm)


def test_unknown_names_are_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown architecture 'VGG16'; allowed: Regular_Conv"):
        architecture("VGG16")
    with pytest.raises(ValueError, match="unknown initializer 'Lecun'; allowed: RandNorm_Large"):
        initializer("Lecun")
