"""The study's training variants (config `variants`): named recipes that override some keys
of the `training` section, each one an axis value of the study. Standard library only: the
Snakefile imports it.

The `training` section itself is the reference variant, named by `variants.reference`
(default "paper"); its cells keep the paths <results_dir>/<arch>/<init>/seed<seed>/, so a
study without variants has exactly the paths it always had. Each entry of
`variants.overrides` ({name, <training key>: value, ...}) trains every cell again under
<results_dir>/variants/<name>/<arch>/<init>/seed<seed>/ with the reference's settings and
its own overrides; everything after training (export, folding, every quantization scheme's
analysis) runs for it as for the reference.

A variant changes how a network is trained, never its layers: a model key in a variant is a
config error that says so (a changed network is an architecture).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

# The training keys a variant may override. The others (analyze_epochs, precision,
# jit_compile, deterministic, validate_every, not_learning_margin) say how a run is executed
# or analysed, not what recipe it follows, and stay the study's.
OVERRIDABLE = (
    "optimizer",
    "learning_rate",
    "momentum",
    "batch_size",
    "epochs",
    "lr_boundaries",
    "lr_factor",
    "label_smoothing",
    "augmentation",
)

# The model section's keys: they change the network, so they make an architecture.
LAYER_KEYS = (
    "width_multiplier",
    "first_conv",
    "stages",
    "dense",
    "bn_momentum",
    "bn_epsilon",
    "expansion",
)

# Where the reference's cells live: the results folder itself (today's paths).
REFERENCE_DIR = ""


def variant_dir(name: str) -> str:
    """The path segment between <results_dir>/ and <arch>/ of a non-reference variant."""
    return f"variants/{name}/"


def variant_dirs(variants: Mapping) -> dict[str, str]:
    """{path segment: variant name} of every variant, the reference first (its segment
    empty), then the overrides in config order."""
    return {
        REFERENCE_DIR: variants["reference"],
        **{variant_dir(entry["name"]): entry["name"] for entry in variants["overrides"]},
    }


def _merge(base: Mapping, overrides: Mapping) -> dict:
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def variant_training(training: Mapping, variants: Mapping, name: str) -> dict:
    """The training section of variant `name`: the reference's `training` itself, or it with
    the variant's overrides applied (a nested `augmentation` override merges key by key)."""
    if name == variants["reference"]:
        return copy.deepcopy(dict(training))
    for entry in variants["overrides"]:
        if entry["name"] == name:
            return _merge(training, {k: v for k, v in entry.items() if k != "name"})
    names = [variants["reference"], *(entry["name"] for entry in variants["overrides"])]
    raise ValueError(f"unknown training variant {name!r}; the config has {', '.join(names)}")


def analyzed_epochs(training: Mapping) -> list[int]:
    """The epochs a run of `training` (a variant's section) keeps and analyses."""
    return sorted(set(training.get("analyze_epochs") or [training["epochs"]]))


def describe(overrides: Mapping) -> str:
    """A short label of a variant's overrides: "optimizer adam, learning_rate 0.001"; the
    reference's (no overrides) is "the training section"."""
    parts = []
    for key, value in overrides.items():
        if key == "name":
            continue
        if isinstance(value, Mapping):
            parts += [f"{key}.{inner} {value[inner]}" for inner in value]
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts) or "the training section"


def variant_problems(variants: Mapping, training: Mapping) -> list[str]:
    """What is wrong with the config's variants beyond the schema: duplicate names, an
    override named like the reference, momentum with Adam, analysed epochs a variant does
    not reach."""
    reference = variants["reference"]
    names = [entry["name"] for entry in variants["overrides"]]
    problems = [
        f"variants.overrides names {name!r} {names.count(name)} times: give each variant its "
        "own name (it is the variant's folder in the paths)"
        for name in dict.fromkeys(names)
        if names.count(name) > 1
    ]
    if reference in names:
        problems.append(
            f"variants.overrides has a variant named {reference!r}, the name of the reference "
            "(variants.reference, the training section): rename one of them"
        )
    for entry in variants["overrides"]:
        merged = _merge(training, {k: v for k, v in entry.items() if k != "name"})
        if merged["optimizer"] != "sgd" and "momentum" in entry:
            problems.append(
                f"variant {entry['name']!r} sets momentum, which only the sgd optimizer has "
                f"(its optimizer is {merged['optimizer']}): remove momentum"
            )
        if training.get("analyze_epochs") and analyzed_epochs(merged)[-1] > merged["epochs"]:
            problems.append(
                f"variant {entry['name']!r} trains {merged['epochs']} epochs, but "
                f"training.analyze_epochs {analyzed_epochs(merged)} lists later ones: remove "
                "them, or set its epochs to at least the last one"
            )
    return problems


def layer_key_problems(variants) -> list[str]:
    """A model key in a variant, which the schema would only call unexpected: say that a
    changed network is an architecture. Run before the schema validation."""
    if not isinstance(variants, Mapping):
        return []
    problems = []
    for entry in variants.get("overrides") or []:
        if not isinstance(entry, Mapping):
            continue
        for key in LAYER_KEYS:
            if key in entry:
                problems.append(
                    f"variant {entry.get('name')!r} sets {key}, which changes the network's "
                    "layers: a training variant changes only how a network is trained (keys: "
                    f"{', '.join(OVERRIDABLE)}). A changed network is an architecture: set "
                    f"model.{key} in its own config (its own results_dir), or add an "
                    "architecture to quantinit.registry"
                )
    return problems
