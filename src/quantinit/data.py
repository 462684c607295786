"""Data sources (official CIFAR-10, an image folder, a synthetic set), checks and the cached file.

Only numpy, Pillow, the standard library and :mod:`quantinit.registry` are imported here;
TensorFlow/Keras is imported inside :func:`load_keras_cifar10` because importing it takes
seconds.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
import zipfile
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from quantinit.registry import NUM_CLASSES

# CIFAR-10's classes in its label order (batches.meta label_names): label k is CLASS_NAMES[k].
# The default of the config key data.classes (config/schema.yaml, checked by a test).
CLASS_NAMES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SHAPE = (32, 32, 3)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
SPLITS = ("train", "test")
# Below this many files, starting worker processes costs more than it saves.
PARALLEL_DECODE_MIN_FILES = 2000
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")
METADATA_KEY = "metadata"
# Marks a file as written by save_dataset, so that load_dataset can reject any other .npz.
FILE_FORMAT = "quantinit.dataset/1"


class DataError(ValueError):
    """A data set is missing, unreadable or malformed; the message says what and where."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test images (uint8, N x 32 x 32 x 3) with int64 labels.

    ``eq=False``: arrays have no single truth value, so equality would raise; compare the
    arrays or :func:`dataset_checksum` instead.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str
    origin: str


def keras_datasets_dir() -> Path:
    """The folder where Keras caches downloaded data sets ($KERAS_HOME/datasets)."""
    return Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "datasets"


def load_keras_cifar10() -> Dataset:
    """The official CIFAR-10 via ``keras.datasets.cifar10`` (downloaded once, then cached)."""
    from keras.datasets import cifar10

    archive = keras_datasets_dir() / "cifar-10-batches-py-target_archive"
    try:
        (x_train, y_train), (x_test, y_test) = cifar10.load_data()
    except Exception as error:
        raise DataError(
            "The official CIFAR-10 data could not be downloaded or read by "
            f"keras.datasets.cifar10.load_data(): {type(error).__name__}: {error}\n"
            "Two ways out:\n"
            "  (a) in the workflow config set data.source: image_folder and data.image_folder "
            "to a folder with train/<class>/ and test/<class>/ images (e.g. a JPEG export of "
            "CIFAR-10, such as the unpacked ../shared/data/cifar10-jpeg.tar.gz), or\n"
            "  (b) put the official cifar-10-python.tar.gz at "
            f"{archive} ($KERAS_HOME/datasets/cifar-10-batches-py-target_archive, "
            "KERAS_HOME defaults to ~/.keras) so that Keras reads it offline."
        ) from error
    return Dataset(
        x_train=np.ascontiguousarray(x_train, dtype=np.uint8),
        y_train=np.asarray(y_train, dtype=np.int64).reshape(-1),
        x_test=np.ascontiguousarray(x_test, dtype=np.uint8),
        y_test=np.asarray(y_test, dtype=np.int64).reshape(-1),
        class_names=CLASS_NAMES,
        source="keras",
        origin=f"keras.datasets.cifar10 (cache {keras_datasets_dir()})",
    )


def _class_folders(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        raise DataError(
            f"Image folder split '{split_dir}' is missing: expected a folder "
            f"{split_dir.name}/<class>/ with one subfolder of images per class."
        )
    classes = sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())
    if not classes:
        raise DataError(
            f"Image folder split '{split_dir}' has no class folders: expected one subfolder "
            "of images per class, e.g. airplane/, automobile/, ..."
        )
    return classes


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(
        entry
        for entry in class_dir.iterdir()
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise DataError(
            f"Class folder '{class_dir}' holds no images: expected .png, .jpg or .jpeg files."
        )
    return files


def _decode_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            size = image.size
            if size != IMAGE_SHAPE[1::-1]:
                raise DataError(
                    f"Image '{path}' is {size[0]}x{size[1]} pixels: expected "
                    f"{IMAGE_SHAPE[1]}x{IMAGE_SHAPE[0]}."
                )
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataError(f"Image '{path}' cannot be decoded: {error}") from error


def _decode_images(paths: list[Path]) -> np.ndarray:
    return np.stack([_decode_image(path) for path in paths]).reshape(-1, *IMAGE_SHAPE)


def _decode_in_parallel(paths: list[Path]) -> np.ndarray:
    """Decode ``paths`` into one uint8 array, using all CPUs for large folders.

    Worker processes, not threads: a 32x32 JPEG takes about 150 us to open, mostly Python code
    in Pillow's header parsing that holds the GIL, so on 2 CPUs a thread pool took 14 s for
    CIFAR-10 against 9 s sequentially and 5.5 s with processes. The workers are forked (no
    re-import of ``__main__``, which Snakemake script files do not guard); where fork is
    unavailable, or the folder is small, decoding runs in this process.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (
        len(paths) < PARALLEL_DECODE_MIN_FILES
        or (cpus or 1) < 2
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return _decode_images(paths)
    chunk_size = -(-len(paths) // (4 * cpus))
    chunks = [paths[start : start + chunk_size] for start in range(0, len(paths), chunk_size)]
    with ProcessPoolExecutor(cpus, mp_context=multiprocessing.get_context("fork")) as pool:
        return np.concatenate(list(pool.map(_decode_images, chunks)))


def check_class_list(classes) -> tuple[str, ...]:
    """The configured class names (data.classes) as a tuple, or a DataError.

    The models end in a ``NUM_CLASSES``-way layer, so the list has exactly that many unique,
    non-empty names; it sets the label order (label k is ``classes[k]``).
    """
    if isinstance(classes, str) or not isinstance(classes, (list, tuple)):
        raise DataError(
            f"data.classes is {classes!r}: expected a list of {NUM_CLASSES} class names."
        )
    names = tuple(classes)
    if not all(isinstance(name, str) and name for name in names):
        raise DataError(
            f"data.classes {list(names)} holds an empty or non-string entry: expected "
            f"{NUM_CLASSES} class names (strings)."
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if len(names) != NUM_CLASSES or duplicates:
        repeats = f" with repeats {duplicates}" if duplicates else ""
        raise DataError(
            f"data.classes lists {len(names)} names{repeats}: "
            f"expected {NUM_CLASSES} unique names, since the models have a {NUM_CLASSES}-way "
            f"output (default CIFAR-10's {list(CLASS_NAMES)})."
        )
    return names


def load_image_folder(root: str | Path, classes=CLASS_NAMES) -> Dataset:
    """Images from ``root/train/<class>/*`` and ``root/test/<class>/*`` (PNG or JPEG, 32x32).

    Both splits must hold exactly one folder per name in ``classes`` (default CIFAR-10's
    :data:`CLASS_NAMES`), no more and no fewer; the folder ``classes[k]`` gets label k. Files
    are read in name order within a class so that the arrays are the same on every run.
    """
    classes = check_class_list(classes)
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"Image folder '{root}' does not exist: expected a folder with train/<class>/ "
            "and test/<class>/ images."
        )
    problems = []
    for split in SPLITS:
        found = set(_class_folders(root / split))
        missing = [name for name in classes if name not in found]
        extra = sorted(found - set(classes))
        if missing:
            problems.append(f"{split}/ lacks {missing}")
        if extra:
            problems.append(f"{split}/ has extra {extra}")
    if problems:
        raise DataError(
            f"Image folder '{root}' has the wrong class folders: {'; '.join(problems)}. "
            f"Expected exactly these {len(classes)} folders in both train/ and test/ "
            f"(data.classes, label k = k-th name): {list(classes)}."
        )
    files: dict[str, list[Path]] = {split: [] for split in SPLITS}
    labels: dict[str, list[int]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        for label, name in enumerate(classes):
            class_files = _image_files(root / split / name)
            files[split].extend(class_files)
            labels[split].extend([label] * len(class_files))
    images = _decode_in_parallel(files["train"] + files["test"])
    num_train = len(files["train"])
    return Dataset(
        x_train=images[:num_train],
        y_train=np.asarray(labels["train"], dtype=np.int64),
        x_test=images[num_train:],
        y_test=np.asarray(labels["test"], dtype=np.int64),
        class_names=classes,
        source="image_folder",
        origin=str(root.resolve()),
    )


def relabel_cifar10(ds: Dataset, classes) -> Dataset:
    """``ds`` (CIFAR-10's classes in :data:`CLASS_NAMES` order) with labels in ``classes`` order.

    The keras and synthetic sources have CIFAR-10's ten classes, so ``classes`` must be those
    ten names, in any order; otherwise a DataError names the missing and extra ones.
    """
    classes = check_class_list(classes)
    if classes == ds.class_names:
        return ds
    missing = [name for name in ds.class_names if name not in classes]
    extra = [name for name in classes if name not in ds.class_names]
    if missing or extra:
        raise DataError(
            f"data.source {ds.source!r} has CIFAR-10's ten classes {list(ds.class_names)}, "
            f"but data.classes lacks {missing} and has extra {extra}: expected those ten "
            "names (in any order), or data.source image_folder for other class folders."
        )
    new_label = np.array([classes.index(name) for name in ds.class_names], dtype=np.int64)
    return replace(
        ds, y_train=new_label[ds.y_train], y_test=new_label[ds.y_test], class_names=classes
    )


def _synthetic_split(
    rng: np.random.Generator, samples: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Oriented sinusoidal gratings, one orientation, frequency and colour tint per class.

    The random phase makes the class signal non-linear in the pixels (a grating and its
    phase-shifted copy average to grey), random brightness blurs the colour cue, and pixel
    noise hides fine detail, so the task is easy for a CNN but not for a linear model.
    """
    num_classes = len(CLASS_NAMES)
    labels = np.arange(samples) % num_classes
    rng.shuffle(labels)

    orientation = np.pi * np.arange(num_classes) / num_classes  # 18 degrees apart
    cycles_per_image = np.array([2.0, 3.0, 4.0, 2.5, 3.5])[np.arange(num_classes) % 5]
    tint = 0.85 + 0.15 * np.array(
        [
            [1.0, 0.2, 0.2],
            [0.2, 1.0, 0.2],
            [0.2, 0.2, 1.0],
            [1.0, 1.0, 0.2],
            [1.0, 0.2, 1.0],
            [0.2, 1.0, 1.0],
            [1.0, 0.6, 0.2],
            [0.6, 0.2, 1.0],
            [0.2, 0.6, 0.6],
            [0.6, 0.6, 0.6],
        ]
    )

    theta = orientation[labels] + rng.normal(0.0, np.deg2rad(4.0), samples)
    frequency = 2 * np.pi * cycles_per_image[labels] / IMAGE_SHAPE[0]
    phase = rng.uniform(0.0, 2 * np.pi, samples)
    brightness = rng.uniform(0.6, 1.3, samples)

    rows, cols = np.mgrid[0 : IMAGE_SHAPE[0], 0 : IMAGE_SHAPE[1]].astype(np.float64)
    along = np.cos(theta)[:, None, None] * cols[None] + np.sin(theta)[:, None, None] * rows[None]
    grating = np.sin(frequency[:, None, None] * along + phase[:, None, None])
    gray = brightness[:, None, None] * (110.0 + 70.0 * grating)
    images = gray[..., None] * tint[labels][:, None, None, :]
    images += rng.normal(0.0, noise, images.shape)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels.astype(np.int64)


def make_synthetic(
    train_samples: int, test_samples: int, seed: int, noise: float = 40.0
) -> Dataset:
    """A seeded, learnable 10-class 32x32 RGB image set (see :func:`_synthetic_split`)."""
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    x_train, y_train = _synthetic_split(train_rng, train_samples, noise)
    x_test, y_test = _synthetic_split(test_rng, test_samples, noise)
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=CLASS_NAMES,
        source="synthetic",
        origin=f"synthetic(seed={seed}, noise={noise})",
    )


def _check_split(split: str, x, y, class_names: tuple[str, ...]) -> list[int]:
    """Validate one split's images and labels; return its per-class sample counts."""
    num_classes = len(class_names)
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise DataError(
            f"{split} images have dtype {getattr(x, 'dtype', type(x).__name__)}: expected uint8."
        )
    if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{split} images have shape {x.shape}: expected (N, 32, 32, 3).")
    if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{split} labels have dtype {getattr(y, 'dtype', type(y).__name__)}: expected integers."
        )
    if y.ndim != 1:
        raise DataError(f"{split} labels have shape {y.shape}: expected a 1-D array.")
    if len(y) != len(x):
        raise DataError(
            f"{split} has {len(x)} images but {len(y)} labels: expected the same number."
        )
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"{split} labels range over [{y.min()}, {y.max()}]: expected values in "
            f"[0, {num_classes - 1}] for {num_classes} classes."
        )
    counts = np.bincount(y, minlength=num_classes).astype(int).tolist()
    missing = [name for name, count in zip(class_names, counts, strict=True) if not count]
    if missing:
        raise DataError(
            f"{split} has no samples of class(es) {missing}: expected every class present."
        )
    return counts


def check_dataset(ds: Dataset) -> dict:
    """Validate shapes, dtypes and labels of both splits; return sample and per-class counts."""
    train_counts = _check_split("train", ds.x_train, ds.y_train, ds.class_names)
    test_counts = _check_split("test", ds.x_test, ds.y_test, ds.class_names)
    return {
        "train_samples": len(ds.y_train),
        "test_samples": len(ds.y_test),
        "train_class_counts": train_counts,
        "test_class_counts": test_counts,
        "balanced": len(set(train_counts)) == 1 and len(set(test_counts)) == 1,
    }


def class_balanced_subset(
    x: np.ndarray, y: np.ndarray, n: int, seed: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random subset of ``n`` samples, ``n // num_classes`` per class.

    The remainder goes one each to the first classes. The result is shuffled because image
    folders are loaded class by class and a class-sorted order would bias training.
    """
    if n < 1 or n > len(x):
        raise DataError(f"Cannot take a subset of {n} samples from {len(x)}: expected 1..{len(x)}.")
    rng = np.random.default_rng(seed)
    per_class = np.full(num_classes, n // num_classes)
    per_class[: n % num_classes] += 1
    chosen = []
    for label, needed in enumerate(per_class):
        candidates = np.flatnonzero(y == label)
        if len(candidates) < needed:
            raise DataError(
                f"Class {label} has {len(candidates)} samples: a balanced subset of {n} "
                f"needs {needed}."
            )
        chosen.append(rng.choice(candidates, size=needed, replace=False))
    order = rng.permutation(np.concatenate(chosen))
    return x[order], y[order]


def subset_dataset(
    ds: Dataset, train_samples: int | None, test_samples: int | None, seed: int
) -> Dataset:
    """Class-balanced subsets of the splits whose size is not None (seeds seed and seed+1)."""
    num_classes = len(ds.class_names)
    x_train, y_train, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    if train_samples is not None:
        x_train, y_train = class_balanced_subset(x_train, y_train, train_samples, seed, num_classes)
    if test_samples is not None:
        x_test, y_test = class_balanced_subset(x_test, y_test, test_samples, seed + 1, num_classes)
    if train_samples is None and test_samples is None:
        return ds
    return replace(
        ds,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        origin=f"{ds.origin}, subset(train={train_samples}, test={test_samples}, seed={seed})",
    )


def dataset_checksum(ds: Dataset) -> str:
    """SHA-256 over the shape, dtype and bytes of x_train, y_train, x_test, y_test in order."""
    digest = hashlib.sha256()
    for key in ARRAY_KEYS:
        array = np.ascontiguousarray(getattr(ds, key))
        digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def save_dataset(ds: Dataset, path: str | Path) -> dict:
    """Write the data set to one uncompressed ``.npz`` (fast to load) and return its metadata.

    The file appears atomically: it is written to a temporary file in the same folder and
    renamed into place, so an interrupted save leaves neither a partial file nor a temp file.
    """
    path = Path(path)
    report = check_dataset(ds)
    metadata = {
        "format": FILE_FORMAT,
        "source": ds.source,
        "origin": ds.origin,
        "class_names": list(ds.class_names),
        "checksum": dataset_checksum(ds),
        **report,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as temp_file:
            np.savez(
                temp_file,
                **{key: getattr(ds, key) for key in ARRAY_KEYS},
                **{METADATA_KEY: np.array(json.dumps(metadata))},
            )
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return metadata


def _read_npz(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"Data set file '{path}' does not exist: expected a file written by save_dataset."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(
            f"Data set file '{path}' cannot be read ({error}): expected a file written by "
            "save_dataset."
        ) from error
    missing = [key for key in (*ARRAY_KEYS, METADATA_KEY) if key not in contents]
    if missing:
        raise DataError(
            f"Data set file '{path}' lacks {missing}: expected a file written by save_dataset."
        )
    try:
        metadata = json.loads(str(contents[METADATA_KEY]))
    except json.JSONDecodeError as error:
        raise DataError(f"Data set file '{path}' has unreadable metadata: {error}") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FILE_FORMAT:
        raise DataError(
            f"Data set file '{path}' has no '{FILE_FORMAT}' metadata: expected a file written "
            "by save_dataset."
        )
    return metadata, {key: contents[key] for key in ARRAY_KEYS}


def load_metadata(path: str | Path) -> dict:
    """The metadata dict that :func:`save_dataset` stored in ``path``."""
    return _read_npz(path)[0]


def load_dataset(path: str | Path) -> Dataset:
    """Read a file written by :func:`save_dataset`, verifying its checksum."""
    metadata, arrays = _read_npz(path)
    ds = Dataset(
        **arrays,
        class_names=tuple(metadata["class_names"]),
        source=metadata["source"],
        origin=metadata["origin"],
    )
    if dataset_checksum(ds) != metadata["checksum"]:
        raise DataError(
            f"Data set file '{path}' is corrupt: its arrays do not match the stored checksum."
        )
    return ds


def load_source(data_config: Mapping) -> Dataset:
    """Load, check and subset the data set that the workflow config's ``data`` section names."""
    source = data_config.get("source", "keras")
    classes = check_class_list(data_config.get("classes", CLASS_NAMES))
    if source == "keras":
        ds = relabel_cifar10(load_keras_cifar10(), classes)
    elif source == "image_folder":
        if not data_config.get("image_folder"):
            raise DataError("data.source is image_folder but data.image_folder is not set.")
        ds = load_image_folder(data_config["image_folder"], classes)
    elif source == "synthetic":
        synthetic = data_config.get("synthetic") or {}
        ds = make_synthetic(
            train_samples=synthetic.get("train_samples", 2000),
            test_samples=synthetic.get("test_samples", 500),
            seed=synthetic.get("seed", 0),
            noise=synthetic.get("noise", 40.0),
        )
        ds = relabel_cifar10(ds, classes)
    else:
        raise DataError(
            f"Unknown data.source {source!r}: expected 'keras', 'image_folder' or 'synthetic'."
        )
    check_dataset(ds)
    ds = subset_dataset(
        ds,
        data_config.get("train_samples"),
        data_config.get("test_samples"),
        data_config.get("subset_seed", 0),
    )
    check_dataset(ds)
    return ds
