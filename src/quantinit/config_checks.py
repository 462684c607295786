"""The workflow config's schema, and constraints that span several keys, checked before any
job runs.

The JSON schema (config/schema.yaml, completed from quantinit.registry by
:func:`study_schema`) checks each key on its own: types, ranges, allowed values, non-empty
lists. What it cannot express lives here: a sample count against the size
of the data set it is drawn from, an epoch list against the number of epochs, a switch that
another setting needs. ``workflow/rules/common.smk`` calls :func:`check_config` right after
the schema validation, so a config that would fail after hours of training stops before the
DAG is built, with every problem listed at once.

Only the standard library is imported at module level: the Snakefile process imports this
module, and with ``--software-deployment-method conda`` that process need not have numpy.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePath

from quantinit.registry import ARCHITECTURES, INITIALIZERS, PAPER_ARCHITECTURES
from quantinit.variants import OVERRIDABLE, layer_key_problems, variant_problems

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"

# keras.datasets.cifar10: the official training and test set sizes
KERAS_SIZES = (50000, 10000)
# quantinit.data.load_source's sizes of the synthetic set when the config omits them
SYNTHETIC_DEFAULTS = (2000, 500)
SPLITS = ("train", "test")
SPLIT_WORDS = {"train": "training", "test": "test"}


def study_schema(schema_file: Path = SCHEMA_FILE) -> dict:
    """config/schema.yaml with what the registry defines filled in: the allowed and default
    architectures and initializers (also of a cell in a list of cells), and one
    `initializer_settings` entry per initializer with settings, its defaults Table 1's.
    So adding a name to the registry is all the schema needs. A training variant's keys
    (`$defs/variant`) are the training section's overridable ones, without defaults."""
    import yaml

    schema = yaml.safe_load(Path(schema_file).read_text())
    properties = schema["properties"]
    cell = schema["$defs"]["cell"]["properties"]
    for key, cell_key, names, default in (
        ("architectures", "arch", list(ARCHITECTURES), PAPER_ARCHITECTURES),
        ("initializers", "init", list(INITIALIZERS), list(INITIALIZERS)),
    ):
        properties[key]["items"] = {"enum": names}
        properties[key]["default"] = list(default)
        cell[cell_key] = {"enum": names}
    properties["initializer_settings"]["properties"] = {
        init.name: {
            "type": "object",
            "additionalProperties": False,
            "required": sorted(init.defaults),
            "properties": {key: {"type": "number", "exclusiveMinimum": 0} for key in init.defaults},
            "default": copy.deepcopy(init.defaults),
        }
        for init in INITIALIZERS.values()
        if init.defaults
    }
    training = properties["training"]["properties"]
    schema["$defs"]["variant"]["properties"].update(
        {key: _without_defaults(training[key]) for key in OVERRIDABLE}
    )
    return schema


def _without_defaults(schema):
    """`schema` with every `default` removed (a variant holds only what it changes)."""
    if isinstance(schema, dict):
        return {key: _without_defaults(value) for key, value in schema.items() if key != "default"}
    return schema


@contextmanager
def study_schema_file(schema_file: Path = SCHEMA_FILE) -> Iterator[str]:
    """study_schema as a temporary JSON file, for snakemake.utils.validate (which takes a
    path); removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="quantinit-schema-") as folder:
        path = Path(folder) / "schema.json"
        path.write_text(json.dumps(study_schema(schema_file)))
        yield str(path)


def canonical(value):
    """`value` with every mapping a plain dict, its keys sorted (lists keep their order).

    Snakemake compares a job's params by their repr: without this, the same settings read
    from config/config.yaml (OrderedDicts, in the file's order) and from a --configfile
    written elsewhere (dicts, in another order) look changed and rerun finished jobs."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


class ConfigError(ValueError):
    """The config breaks constraints between keys; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        count = len(self.problems)
        header = f"config: {count} problem{'s' if count != 1 else ''} (no job was started):"
        super().__init__("\n".join([header, *(f"  - {line}" for line in self.problems)]))


def _count_images(split_dir: Path) -> int | None:
    """Image files under ``split_dir/<class>/``, by quantinit.data's rule (file, image suffix).

    One ``os.scandir`` per folder and no stat per file: CIFAR-10's 60,000 files take about
    0.07 s. None when the folder cannot be read or numpy/Pillow (needed to import
    quantinit.data) are missing; ``prepare_data`` then reports what is wrong itself.
    """
    try:
        from quantinit.data import IMAGE_SUFFIXES
    except ImportError:
        return None
    try:
        with os.scandir(split_dir) as entries:
            class_dirs = [entry.path for entry in entries if entry.is_dir()]
        count = 0
        for class_dir in class_dirs:
            with os.scandir(class_dir) as entries:
                count += sum(
                    1
                    for entry in entries
                    if entry.is_file() and PurePath(entry.name).suffix.lower() in IMAGE_SUFFIXES
                )
    except OSError:
        return None
    return count


def source_split_sizes(data_config: Mapping) -> tuple[int | None, int | None]:
    """(train, test) sizes of the data source before any subset; None where unknown.

    An image folder is counted if it exists (relative paths from the working directory, as
    the ``prepare_data`` job reads them); a missing folder gives None.
    """
    source = data_config.get("source", "keras")
    if source == "keras":
        return KERAS_SIZES
    if source == "synthetic":
        synthetic = data_config.get("synthetic") or {}
        return (
            synthetic.get("train_samples", SYNTHETIC_DEFAULTS[0]),
            synthetic.get("test_samples", SYNTHETIC_DEFAULTS[1]),
        )
    if source == "image_folder" and data_config.get("image_folder"):
        root = Path(data_config["image_folder"])
        if root.is_dir():
            return _count_images(root / "train"), _count_images(root / "test")
    return None, None


def expected_split_sizes(data_config: Mapping) -> tuple[int | None, int | None]:
    """(train, test) sizes of the prepared data set; None where unknown before preparation.

    A ``data.train_samples`` / ``data.test_samples`` subset sets its split's size, whatever
    the source (as quantinit.data.load_source applies it); otherwise the source's size.
    """
    return _apply_subsets(data_config, source_split_sizes(data_config))


def _apply_subsets(data_config: Mapping, sizes) -> tuple[int | None, int | None]:
    subsets = (data_config.get(f"{split}_samples") for split in SPLITS)
    return tuple(
        size if subset is None else subset for subset, size in zip(subsets, sizes, strict=True)
    )


def _source_origin(data_config: Mapping, split: str) -> str:
    """Where the source's size of ``split`` comes from, for messages."""
    source = data_config.get("source", "keras")
    if source == "synthetic":
        size = source_split_sizes(data_config)[SPLITS.index(split)]
        return f"data.synthetic.{split}_samples = {size}"
    if source == "image_folder":
        return f"counted in data.image_folder {data_config.get('image_folder')!r}"
    return f"data.source {source}: CIFAR-10"


def _split_origin(data_config: Mapping, split: str) -> str:
    """Where the prepared ``split``'s size comes from, for messages."""
    subset = data_config.get(f"{split}_samples")
    if subset is not None:
        return f"data.{split}_samples = {subset}"
    return _source_origin(data_config, split)


def _data_problems(data: Mapping, source_sizes) -> list[str]:
    problems = []
    if data.get("source") == "image_folder" and not data.get("image_folder"):
        problems.append(
            "data.source is image_folder but data.image_folder is empty: set it to a folder "
            "with train/<class>/ and test/<class>/ images"
        )
    for split, size in zip(SPLITS, source_sizes, strict=True):
        subset = data.get(f"{split}_samples")
        if subset is not None and size is not None and subset > size:
            problems.append(
                f"data.{split}_samples = {subset} is more than the source's {size} "
                f"{SPLIT_WORDS[split]} images ({_source_origin(data, split)}): set "
                f"data.{split}_samples to at most {size}, or null for all of them"
            )
    return problems


def _sample_problem(key: str, value: int, size: int, origin: str, fix: str) -> str:
    return (
        f"{key} = {value} is more than the {size} training images ({origin}): set {key} "
        f"to at most {size}{fix}"
    )


def _scheme_problems(quantization: Mapping) -> list[str]:
    names = [scheme["name"] for scheme in quantization["schemes"]]
    problems = [
        f"quantization.schemes names {name!r} {names.count(name)} times: give each scheme "
        "its own name (it is the scheme's folder in the paths)"
        for name in dict.fromkeys(names)
        if names.count(name) > 1
    ]
    if quantization["table2"] not in names:
        problems.append(
            f"quantization.table2 is {quantization['table2']!r}, which is not among "
            f"quantization.schemes ({', '.join(names)}): set it to one of them"
        )
    return problems


# Keys that moved, and where to: a config written for an older version gets told, not only
# that a key is unexpected.
MOVED_KEYS = {
    ("calibration", "percentile"): "quantization.schemes[].percentile",
    **{
        ("quantization", key): f"quantization.schemes[].{key}"
        for key in ("bits", "granularity", "symmetric", "calibration")
    },
}


def check_moved_keys(config: Mapping) -> None:
    """Raise :class:`ConfigError` naming each key of ``config`` that belongs elsewhere: one
    MOVED_KEYS lists, with its new place, and a model key in a training variant (a changed
    network is an architecture). Run before the schema validation, which would only call
    such a key unexpected."""
    problems = [
        f"{section}.{key} has moved to {target}: each named scheme sets it "
        "(config/config.yaml shows the paper's quint8)"
        for (section, key), target in MOVED_KEYS.items()
        if isinstance(config.get(section), Mapping) and key in config[section]
    ]
    problems += layer_key_problems(config.get("variants"))
    if problems:
        raise ConfigError(problems)


def check_config(config: Mapping) -> None:
    """Raise :class:`ConfigError` listing every cross-key constraint that ``config`` breaks.

    ``config`` is the workflow config after schema validation (defaults filled in).
    Checked: data subsets against the source's size; calibration.num_samples and
    dynamics.probe_samples (when dynamics.enabled) against the training set's size;
    training.analyze_epochs against training.epochs; training.jit_compile against
    training.deterministic; aggregate.dynamics_cells against dynamics.enabled;
    quantization.schemes' names unique and quantization.table2 among them; the training
    variants (quantinit.variants.variant_problems).
    sensitivity.num_images is not checked: more than the test set means all of it.
    """
    data = config.get("data", {})
    training = config["training"]
    dynamics = config["dynamics"]
    source_sizes = source_split_sizes(data)
    problems = _data_problems(data, source_sizes)

    train_size, _ = _apply_subsets(data, source_sizes)
    origin = _split_origin(data, "train")
    if None not in (train_size, source_sizes[0]) and train_size > source_sizes[0]:
        # the subset is reported above; bound the samples by what the source has
        train_size, origin = source_sizes[0], _source_origin(data, "train")
    if train_size is not None:
        num_samples = config["calibration"]["num_samples"]
        if num_samples > train_size:
            problems.append(
                _sample_problem(
                    "calibration.num_samples",
                    num_samples,
                    train_size,
                    origin,
                    " (calibration draws its images without replacement)",
                )
            )
        probe = dynamics["probe_samples"]
        if dynamics["enabled"] and probe > train_size:
            problems.append(
                _sample_problem(
                    "dynamics.probe_samples",
                    probe,
                    train_size,
                    origin,
                    ", or dynamics.enabled: false",
                )
            )

    epochs = training["epochs"]
    analyze = sorted(set(training.get("analyze_epochs") or [epochs]))
    if analyze[-1] > epochs:
        problems.append(
            f"training.analyze_epochs {analyze} lists epochs after the last training epoch "
            f"(training.epochs = {epochs}): remove them or raise training.epochs"
        )
    if training["jit_compile"] and training["deterministic"]:
        problems.append(
            "training.jit_compile: true needs training.deterministic: false (Keras does not "
            "compile with XLA under TensorFlow's op determinism): set one of them to false"
        )

    problems += _scheme_problems(config["quantization"])
    problems += variant_problems(config["variants"], training)

    dynamics_cells = config["aggregate"]["dynamics_cells"]
    if dynamics_cells and not dynamics["enabled"]:
        problems.append(
            f"aggregate.dynamics_cells lists {len(dynamics_cells)} cell(s) to draw but "
            "dynamics.enabled is false, so training records no dynamics: set "
            "dynamics.enabled: true or aggregate.dynamics_cells: []"
        )

    if problems:
        raise ConfigError(problems)
