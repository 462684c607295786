"""Config validation: bad configs stop the run before any job, naming the key."""

import copy
import os
import subprocess
import sys

import pytest
import yaml
from snakemake.utils import validate

from quantinit.config_checks import (
    ConfigError,
    check_config,
    expected_split_sizes,
    study_schema_file,
)
from quantinit.workflow_tools import deep_update, planned_jobs

from conftest import REPO
from workflow_helpers import TINY, snakemake, write_config

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def dry_run(tmp_path, config_overrides=None, extra=()):
    """snakemake -n with config/config.yaml plus `config_overrides` (a dict, as YAML)."""
    args = [*SNAKEMAKE, "-n", "--cores", "8", "--directory", str(tmp_path)]
    args += ["--snakefile", str(REPO / "Snakefile")]
    if config_overrides is not None:
        override = tmp_path / "override.yaml"
        override.write_text(yaml.safe_dump(config_overrides))
        args += ["--configfile", str(REPO / "config" / "config.yaml"), str(override)]
    else:
        args += ["--configfile", str(REPO / "config" / "config.yaml")]
    return subprocess.run([*args, *extra], capture_output=True, text=True, timeout=120)


def test_default_config_is_the_48_cell_study(tmp_path):
    result = dry_run(tmp_path)
    assert result.returncode == 0, result.stderr
    counts = planned_jobs(result.stdout)
    assert counts["train"] == 48
    assert counts["export_checkpoint"] == 48
    assert counts["prepare_data"] == 1


def test_the_block_types_overlay_adds_their_cells(tmp_path):
    """config/blocks.yaml: the paper's four architectures and the sequel's four, 96 cells."""
    blocks = yaml.safe_load((REPO / "config" / "blocks.yaml").read_text())
    assert blocks["architectures"][:4] == TINY["architectures"]
    result = dry_run(tmp_path, blocks)
    assert result.returncode == 0, result.stderr
    assert planned_jobs(result.stdout)["train"] == 96


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"trainig": {"epochs": 3}}, ["trainig", "Additional properties"]),
        ({"training": {"epochz": 3}}, ["epochz"]),
        ({"training": {"epochs": "many"}}, ["many", "integer", "epochs"]),
        ({"architectures": ["ResNet50"]}, ["ResNet50", "Regular_Conv_With_BN", "DWS_Conv_No_BN"]),
        ({"initializers": ["HeNormal"]}, ["HeNormal", "HeNorm", "RandUni_Large"]),
        ({"data": {"source": "imagenet"}}, ["imagenet", "image_folder", "synthetic"]),
        ({"initializer_settings": {"RandUni_Large": {"limt": 1}}}, ["limt"]),
        (
            {"quantization": {"schemes": [{"name": "q", "percentile": 60}], "table2": "q"}},
            ["60", "percentile"],
        ),
        ({"quantization": {"schemes": [{"name": "q", "bits": 1}], "table2": "q"}}, ["1", "bits"]),
        ({"quantization": {"schemes": [{"name": "q/8"}], "table2": "q/8"}}, ["q/8", "name"]),
        (
            {"quantization": {"schemes": [{"name": "q", "granularty": "per_channel"}]}},
            ["granularty"],
        ),
        ({"quantization": {"schemes": []}}, ["schemes", "non-empty"]),
        # keys an older version had: where they went
        (
            {"calibration": {"percentile": 2.0}},
            ["calibration.percentile has moved to quantization.schemes[].percentile"],
        ),
        ({"quantization": {"bits": 4}}, ["quantization.bits has moved to quantization.schemes"]),
        # a config may name a scheme only once, and Table 2's scheme must be one of them
        (
            {"quantization": {"schemes": [{"name": "q"}, {"name": "q", "bits": 4}], "table2": "q"}},
            ["quantization.schemes names 'q' 2 times"],
        ),
        (
            {"quantization": {"schemes": [{"name": "int4", "bits": 4}]}},
            ["quantization.table2 is 'quint8'", "int4"],
        ),
        ({"training": {"precision": "float16"}}, ["float16", "mixed_float16", "mixed_bfloat16"]),
        ({"training": {"optimizer": "rmsprop"}}, ["rmsprop", "sgd", "adam"]),
        # a training variant: only overridable training keys, at least one of them
        ({"variants": {"overrides": [{"name": "v", "dropout": 0.1}]}}, ["dropout", "unexpected"]),
        ({"variants": {"overrides": [{"name": "v", "precision": "mixed_float16"}]}}, ["precision"]),
        ({"variants": {"overrides": [{"name": "v"}]}}, ["enough properties"]),
        ({"variants": {"overrides": [{"name": "v", "optimizer": "rmsprop"}]}}, ["rmsprop"]),
        ({"variants": {"overrides": [{"name": "a/b", "epochs": 3}]}}, ["a/b", "name"]),
        (
            {"variants": {"overrides": [{"name": "wide", "width_multiplier": 2.0}]}},
            [
                "variant 'wide' sets width_multiplier",
                "changes the network's layers",
                "architecture",
            ],
        ),
        (
            {"variants": {"overrides": [{"name": "v", "epochs": 3}, {"name": "v", "epochs": 5}]}},
            ["variants.overrides names 'v' 2 times"],
        ),
        (
            {"variants": {"overrides": [{"name": "paper", "epochs": 3}]}},
            ["variant named 'paper'", "variants.reference"],
        ),
        (
            {"variants": {"overrides": [{"name": "a", "optimizer": "adam", "momentum": 0.5}]}},
            ["variant 'a' sets momentum", "only the sgd optimizer"],
        ),
        (
            {
                "training": {"epochs": 5, "analyze_epochs": [5]},
                "variants": {"overrides": [{"name": "short", "epochs": 3}]},
            },
            ["variant 'short' trains 3 epochs", "analyze_epochs [5]"],
        ),
        ({"aggregate": {"figure2_cells": []}}, ["figure2_cells", "non-empty"]),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, override, expected):
    result = dry_run(tmp_path, override)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"
    assert "Job stats" not in message and "job count" not in message.lower()
    assert not (tmp_path / "results").exists()


def test_analyze_epochs_after_the_last_epoch_is_an_error(tmp_path):
    result = dry_run(tmp_path, {"training": {"epochs": 5, "analyze_epochs": [3, 7]}})
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "analyze_epochs" in message and "training.epochs = 5" in message


def test_xla_with_op_determinism_is_an_error(tmp_path):
    result = dry_run(tmp_path, {"training": {"jit_compile": True}})
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "training.jit_compile: true needs training.deterministic: false" in message
    assert (
        dry_run(tmp_path, {"training": {"jit_compile": True, "deterministic": False}}).returncode
        == 0
    )


def test_class_list_other_than_ten_names_stops_before_any_job(tmp_path):
    """data.classes can rename or reorder the ten classes (10-way models), not drop one."""
    nine = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"]
    for classes in (nine, [*nine, "truck", "zebra"], [*nine, "ship"]):
        result = dry_run(tmp_path, {"data": {"classes": classes}})
        assert result.returncode != 0, classes
        assert "classes" in result.stdout + result.stderr
        assert not (tmp_path / "results").exists()


def job_resources(stdout: str) -> dict[str, set[str]]:
    """rule name -> the distinct `resources:` lines of its planned jobs in a dry run."""
    resources, rule = {}, None
    for line in stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            resources.setdefault(rule, set()).add(line.strip())
    return resources


def test_gpu_resources_reach_the_jobs(tmp_path):
    """Train jobs carry resources.train.gpu, the TensorFlow analysis job (evaluate)
    resources.analysis.gpu: what --resources gpu=N caps locally and what the SLURM profile
    turns into --gpus. The LiteRT and numpy stages ask for none."""
    override = {"resources": {"train": {"gpu": 1}, "analysis": {"gpu": 0}}}
    result = dry_run(tmp_path, override)
    resources = job_resources(result.stdout + result.stderr)
    assert all("gpu=1" in line for line in resources["train"])
    assert all("gpu=0" in line for line in resources["evaluate"])
    for rule in ("build_engine", "fold_bn", "calibrate", "quantize", "layerwise",
                 "quant_sensitivity"):  # fmt: skip
        assert not any("gpu" in line for line in resources[rule]), rule


def test_defaults_fill_omitted_keys(tmp_path):
    """A config with only a few keys gets the schema's defaults (Table 1 settings too)."""
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text(yaml.safe_dump({"architectures": ["DWS_Conv_With_BN"], "seeds": [0, 1]}))
    args = [*SNAKEMAKE, "-n", "--cores", "1", "--directory", str(tmp_path)]
    args += ["--snakefile", str(REPO / "Snakefile"), "--configfile", str(minimal)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # 12 initializers x 2 seeds, plus Figure 2's default cell (DWS_Conv_No_BN_GlorotUni),
    # which is drawn even though it is outside this study, for both seeds
    assert planned_jobs(result.stdout)["train"] == 12 * 2 + 2


# --------------------------------------------------------------- cross-key constraints


def checked(base=None, **overrides):
    """`base` (default the tiny synthetic study: 1200 training, 200 test images) with
    `overrides`, validated by the schema (defaults filled in) as the workflow does."""
    config = copy.deepcopy(deep_update(TINY if base is None else base, overrides))
    with study_schema_file() as schema:
        validate(config, schema)
    return config


def problems(config) -> list[str]:
    """The lines of check_config's ConfigError for `config` ([] if it passes)."""
    try:
        check_config(config)
    except ConfigError as error:
        assert str(error).splitlines()[1:] == [f"  - {line}" for line in error.problems]
        return error.problems
    return []


def image_folder(root, train_per_class, test_per_class):
    """A folder of empty 'images' (only the names are counted) plus files that are not."""
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in ("cat", "dog"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{i}.{'PNG' if i % 2 else 'jpg'}").touch()
            (folder / "notes.txt").touch()
            (folder / "nested.png").mkdir()
    return root


@pytest.mark.parametrize(
    ("data", "sizes"),
    [
        ({"source": "synthetic"}, (2000, 500)),
        ({"source": "synthetic", "synthetic": {"train_samples": 1200}}, (1200, 500)),
        ({"source": "synthetic", "train_samples": 300, "test_samples": 100}, (300, 100)),
        ({"source": "keras"}, (50000, 10000)),
        ({"source": "keras", "test_samples": 1000}, (50000, 1000)),
        ({"source": "image_folder", "image_folder": "/no/such/folder"}, (None, None)),
        (
            {"source": "image_folder", "image_folder": "/no/such", "train_samples": 5000},
            (5000, None),
        ),
    ],
)
def test_expected_split_sizes(data, sizes):
    assert expected_split_sizes(checked({}, data=data)["data"]) == sizes


def test_expected_split_sizes_counts_an_image_folder(tmp_path):
    """Image files (.png/.jpg/.jpeg, any case) in train/<class>/ and test/<class>/ count;
    other files and folders do not; a subset replaces the count."""
    root = image_folder(tmp_path / "images", train_per_class=7, test_per_class=3)
    data = {"source": "image_folder", "image_folder": str(root)}
    assert expected_split_sizes(data) == (14, 6)
    assert expected_split_sizes({**data, "test_samples": 4}) == (14, 4)


def test_valid_configs_pass():
    assert problems(checked()) == []
    config_yaml = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert problems(checked(config_yaml)) == []
    quick = yaml.safe_load((REPO / "config" / "quick.yaml").read_text())
    assert problems(checked(deep_update(config_yaml, quick))) == []
    # at the limits: every training image calibrates, probes
    at_limit = checked(calibration={"num_samples": 1200}, dynamics={"probe_samples": 1200})
    assert problems(at_limit) == []


@pytest.mark.parametrize(
    "overrides",
    [
        # more test images than the test set's 200: the whole test set is analysed
        {"sensitivity": {"num_images": 5000}},
        # a batch larger than the training set is one batch per epoch
        {"training": {"batch_size": 5000}},
        # without dynamics, its probe size does not matter
        {
            "dynamics": {"enabled": False, "probe_samples": 5000},
            "aggregate": {"dynamics_cells": []},
        },
        {"training": {"epochs": 5, "analyze_epochs": [2, 5]}},
        {"training": {"jit_compile": True, "deterministic": False}},
        {
            "sensitivity": {"enabled": False, "figure_cells": []},
            "aggregate": {"dynamics_cells": []},
        },
    ],
)
def test_satisfied_constraints_pass(overrides):
    assert problems(checked(**overrides)) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"calibration": {"num_samples": 1201}},
            ["calibration.num_samples = 1201", "1200 training images",
             "data.synthetic.train_samples = 1200", "at most 1200"],
        ),
        (
            {"data": {"train_samples": 500}, "calibration": {"num_samples": 1024}},
            ["calibration.num_samples = 1024", "data.train_samples = 500", "at most 500"],
        ),
        (
            {"dynamics": {"probe_samples": 1500}},
            ["dynamics.probe_samples = 1500", "at most 1200", "dynamics.enabled: false"],
        ),
        (
            {"data": {"train_samples": 1300}},
            ["data.train_samples = 1300", "1200 training images", "at most 1200"],
        ),
        (
            {"data": {"test_samples": 300}},
            ["data.test_samples = 300", "200 test images", "at most 200"],
        ),
        (
            {"data": {"source": "keras", "train_samples": 60000}},
            ["data.train_samples = 60000", "50000 training images", "keras"],
        ),
        (
            {"data": {"source": "image_folder", "image_folder": ""}},
            ["data.image_folder is empty"],
        ),
        (
            {"training": {"epochs": 5, "analyze_epochs": [3, 7]}},
            ["training.analyze_epochs [3, 7]", "training.epochs = 5"],
        ),
        (
            {"training": {"jit_compile": True}},
            ["training.jit_compile: true needs training.deterministic: false"],
        ),
        (
            {"dynamics": {"enabled": False}},
            ["aggregate.dynamics_cells", "dynamics.enabled is false",
             "aggregate.dynamics_cells: []"],
        ),
    ],
)  # fmt: skip
def test_violated_constraint_is_named(overrides, expected):
    found = problems(checked(**overrides))
    assert len(found) == 1, found
    for text in expected:
        assert text in found[0], f"{text!r} not in {found[0]!r}"


def test_every_violation_is_listed():
    config = checked(
        data={"train_samples": 1300},
        calibration={"num_samples": 2000},
        dynamics={"enabled": False},
        training={"epochs": 5, "analyze_epochs": [7], "jit_compile": True},
    )
    with pytest.raises(ConfigError, match="5 problems") as raised:
        check_config(config)
    keys = ["data.train_samples", "calibration.num_samples", "training.analyze_epochs",
            "training.jit_compile", "aggregate.dynamics_cells"]  # fmt: skip
    assert [line.split(" ")[0].rstrip(":") for line in raised.value.problems] == keys
    # a subset larger than the source is reported once; other counts are bounded by the source
    assert "at most 1200" in raised.value.problems[1]
    assert isinstance(raised.value, ValueError)


def test_image_folder_size_bounds_the_samples(tmp_path):
    root = image_folder(tmp_path / "images", train_per_class=50, test_per_class=10)
    data = {"source": "image_folder", "image_folder": str(root)}
    found = problems(checked(data=data, calibration={"num_samples": 101}))
    assert len(found) == 2 and "calibration.num_samples = 101" in found[0]
    assert "at most 100" in found[0] and str(root) in found[0]
    assert "dynamics.probe_samples = 256" in found[1]  # the default probe is too large too
    small = {"calibration": {"num_samples": 100}, "dynamics": {"probe_samples": 100}}
    assert problems(checked(data=data, **small)) == []
    found = problems(checked(data={**data, "test_samples": 30}, **small))
    assert len(found) == 1 and "data.test_samples = 30" in found[0] and "20 test" in found[0]


def test_cross_key_violations_stop_the_dry_run(tmp_path):
    """A config that would fail only after training stops `snakemake -n`, the fix shown."""
    write_config(tmp_path, calibration={"num_samples": 5000}, dynamics={"probe_samples": 4000})
    result = snakemake(tmp_path, "-n", timeout=120)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "config: 2 problems" in message
    assert "calibration.num_samples = 5000 is more than the 1200 training images" in message
    assert "set calibration.num_samples to at most 1200" in message
    assert "dynamics.probe_samples = 4000" in message
    assert "job count" not in message.lower() and "Traceback" not in message
    assert not (tmp_path / "results").exists()


def test_cross_key_violation_leaves_previous_outputs_alone(tmp_path):
    """A run with a broken config starts no job: a previous run's outputs stay as they are
    and nothing new appears under results/."""
    table = tmp_path / "results" / "study" / "table2.md"
    table.parent.mkdir(parents=True)
    table.write_text("previous run\n")
    os.utime(table, (1_000_000_000, 1_000_000_000))
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "results").rglob("*"))
    write_config(tmp_path, calibration={"num_samples": 5000})
    result = snakemake(tmp_path, "results/data/dataset.npz", cores=1, timeout=300)
    assert result.returncode != 0
    assert "calibration.num_samples = 5000" in result.stdout + result.stderr
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "results").rglob("*")) == before
    assert table.read_text() == "previous run\n"
    assert table.stat().st_mtime == 1_000_000_000
