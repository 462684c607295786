"""Tests for quantinit.data: sources, checks, subsets and the cached .npz file."""

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import quantinit.data
from quantinit.data import (
    CLASS_NAMES,
    DataError,
    Dataset,
    check_dataset,
    class_balanced_subset,
    dataset_checksum,
    load_dataset,
    load_image_folder,
    load_metadata,
    load_source,
    make_synthetic,
    save_dataset,
    subset_dataset,
)
from quantinit.models import NUM_CLASSES

REPO = Path(__file__).resolve().parents[1]
SRC_DIR = REPO / "src"
# CIFAR-10's classes, created out of label order on purpose: labels follow data.classes
# (default CLASS_NAMES), not the order in which the folders were made or listed.
FOLDER_CLASSES = (
    "truck",
    "cat",
    "airplane",
    "ship",
    "dog",
    "bird",
    "frog",
    "deer",
    "horse",
    "automobile",
)
IMAGES_PER_CLASS = 3


def _random_image(rng: np.random.Generator, size=(32, 32)) -> np.ndarray:
    return rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """train/ and test/ with 10 classes of PNGs, one JPEG and one grayscale PNG per split."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for split in ("train", "test"):
        for name in FOLDER_CLASSES:
            class_dir = root / split / name
            class_dir.mkdir(parents=True)
            for index in range(IMAGES_PER_CLASS):
                Image.fromarray(_random_image(rng)).save(class_dir / f"{index:02d}.png")
        Image.fromarray(_random_image(rng)).save(root / split / "cat" / "10.JPG", format="JPEG")
        gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
        Image.fromarray(gray, mode="L").save(root / split / "dog" / "10.png")
        (root / split / "dog" / "notes.txt").write_text("not an image")
    return root


def test_cifar10_class_names_are_in_label_order():
    # batches.meta label_names of the official CIFAR-10 (label 0 airplane ... 9 truck)
    assert CLASS_NAMES == (
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


def test_schema_default_classes_are_class_names():
    data = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())["properties"]["data"]
    classes = data["properties"]["classes"]
    assert tuple(classes["default"]) == CLASS_NAMES
    # the models' output size: the list can only rename or reorder the ten classes
    assert classes["minItems"] == classes["maxItems"] == NUM_CLASSES == len(CLASS_NAMES)


def test_image_folder_loads_with_labels_in_class_list_order(image_folder: Path):
    ds = load_image_folder(image_folder)
    assert ds.class_names == CLASS_NAMES
    assert ds.source == "image_folder"
    assert ds.origin == str(image_folder.resolve())
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == np.uint8 and x.shape == (10 * IMAGES_PER_CLASS + 2, 32, 32, 3)
        assert y.dtype == np.int64
        counts = np.bincount(y, minlength=10)
        expected = np.full(10, IMAGES_PER_CLASS)
        expected[CLASS_NAMES.index("cat")] += 1
        expected[CLASS_NAMES.index("dog")] += 1
        np.testing.assert_array_equal(counts, expected)
    # Class by class in CLASS_NAMES order, files by name within a class.
    assert ds.y_train[0] == CLASS_NAMES.index("airplane") == 0
    first_truck = int(np.flatnonzero(ds.y_train == CLASS_NAMES.index("truck"))[0])
    stored = np.asarray(Image.open(image_folder / "train" / "truck" / "00.png"))
    np.testing.assert_array_equal(ds.x_train[first_truck], stored)
    check_dataset(ds)


def test_image_folder_converts_grayscale_to_rgb(image_folder: Path):
    ds = load_image_folder(image_folder)
    dog = CLASS_NAMES.index("dog")
    gray_image = ds.x_train[np.flatnonzero(ds.y_train == dog)[-1]]
    gray = np.asarray(Image.open(image_folder / "train" / "dog" / "10.png"))
    for channel in range(3):
        np.testing.assert_array_equal(gray_image[..., channel], gray)


def test_image_folder_parallel_decode_matches_sequential(image_folder: Path, monkeypatch):
    sequential = load_image_folder(image_folder)
    monkeypatch.setattr(quantinit.data, "PARALLEL_DECODE_MIN_FILES", 1)
    parallel = load_image_folder(image_folder)
    assert dataset_checksum(parallel) == dataset_checksum(sequential)


def test_image_folder_parallel_decode_names_corrupt_file(image_folder: Path, monkeypatch):
    monkeypatch.setattr(quantinit.data, "PARALLEL_DECODE_MIN_FILES", 1)
    (image_folder / "test" / "frog" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match=r"broken\.jpg.*cannot be decoded"):
        load_image_folder(image_folder)


def test_image_folder_missing_root(tmp_path: Path):
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        load_image_folder(tmp_path / "nowhere")


def test_image_folder_missing_test_split(image_folder: Path):
    for path in sorted((image_folder / "test").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (image_folder / "test").rmdir()
    with pytest.raises(DataError, match=r"test.*is missing"):
        load_image_folder(image_folder)


def test_image_folder_without_class_folders(tmp_path: Path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_image_folder(tmp_path)


def test_image_folder_empty_class_folder(image_folder: Path):
    for path in (image_folder / "test" / "ship").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=r"ship.*holds no images"):
        load_image_folder(image_folder)


def test_image_folder_corrupt_file_is_named(image_folder: Path):
    (image_folder / "train" / "frog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken\.png.*cannot be decoded"):
        load_image_folder(image_folder)


def test_image_folder_wrong_size_names_file_and_size(image_folder: Path):
    rng = np.random.default_rng(1)
    Image.fromarray(_random_image(rng, size=(40, 30))).save(
        image_folder / "test" / "bird" / "big.png"
    )
    with pytest.raises(DataError, match=r"big\.png.*40x30"):
        load_image_folder(image_folder)


def test_image_folder_mismatched_classes(image_folder: Path):
    (image_folder / "test" / "horse").rename(image_folder / "test" / "pony")
    with pytest.raises(DataError, match=r"test/ lacks \['horse'\]; test/ has extra \['pony'\]"):
        load_image_folder(image_folder)


def _remove_class(root: Path, split: str, name: str) -> None:
    for path in (root / split / name).iterdir():
        path.unlink()
    (root / split / name).rmdir()


def test_image_folder_class_missing_from_both_splits(image_folder: Path):
    for split in ("train", "test"):
        _remove_class(image_folder, split, "horse")
    expected = (
        rf"'{re.escape(str(image_folder))}' has the wrong class folders: "
        r"train/ lacks \['horse'\]; test/ lacks \['horse'\]\. Expected exactly these 10 "
        r"folders.*'airplane'.*'truck'"
    )
    with pytest.raises(DataError, match=expected):
        load_image_folder(image_folder)
    with pytest.raises(DataError, match=r"train/ lacks \['horse'\]"):
        load_source({"source": "image_folder", "image_folder": str(image_folder)})


def test_image_folder_class_missing_from_test_split_only(image_folder: Path):
    _remove_class(image_folder, "test", "ship")
    with pytest.raises(DataError, match=r"wrong class folders: test/ lacks \['ship'\]\. "):
        load_image_folder(image_folder)


def test_image_folder_extra_class_folder(image_folder: Path):
    rng = np.random.default_rng(2)
    for split in ("train", "test"):
        (image_folder / split / "zebra").mkdir()
        Image.fromarray(_random_image(rng)).save(image_folder / split / "zebra" / "00.png")
    expected = r"train/ has extra \['zebra'\]; test/ has extra \['zebra'\]\. Expected exactly"
    with pytest.raises(DataError, match=expected):
        load_image_folder(image_folder)
    with pytest.raises(DataError, match=r"has extra \['zebra'\]"):
        load_source({"source": "image_folder", "image_folder": str(image_folder)})


def test_image_folder_labels_follow_configured_class_list(image_folder: Path):
    """A renamed folder and a list in neither sorted nor CIFAR order: folder classes[k] is k."""
    for split in ("train", "test"):
        (image_folder / split / "automobile").rename(image_folder / split / "car")
    classes = [name if name != "automobile" else "car" for name in FOLDER_CLASSES]
    config = {"source": "image_folder", "image_folder": str(image_folder), "classes": classes}
    ds = load_source(config)
    assert ds.class_names == tuple(classes)
    for label, name in enumerate(classes):
        first = int(np.flatnonzero(ds.y_train == label)[0])
        stored = np.asarray(Image.open(image_folder / "train" / name / "00.png"))
        np.testing.assert_array_equal(ds.x_train[first], stored)
        assert (ds.y_test == label).sum() == IMAGES_PER_CLASS + (name in ("cat", "dog"))
    # Without the list the renamed folder is wrong data, not a tenth class.
    with pytest.raises(DataError, match=r"lacks \['automobile'\]; train/ has extra \['car'\]"):
        load_image_folder(image_folder)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (CLASS_NAMES[:9], r"lists 9 names: expected 10 unique names.*10-way output"),
        ((*CLASS_NAMES, "zebra"), r"lists 11 names"),
        ((*CLASS_NAMES[:9], "cat"), r"repeats \['cat'\]"),
        ("airplane", r"expected a list of 10 class names"),
        ((*CLASS_NAMES[:9], ""), r"empty or non-string"),
    ],
)
def test_bad_class_list_is_rejected(image_folder: Path, classes, message):
    with pytest.raises(DataError, match=message):
        load_image_folder(image_folder, classes)
    with pytest.raises(DataError, match=message):
        load_source({"source": "synthetic", "classes": classes})


def test_synthetic_shapes_balance_and_determinism():
    ds = make_synthetic(200, 100, seed=3)
    again = make_synthetic(200, 100, seed=3)
    other = make_synthetic(200, 100, seed=4)
    assert ds.x_train.shape == (200, 32, 32, 3) and ds.x_test.shape == (100, 32, 32, 3)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.class_names == CLASS_NAMES and ds.source == "synthetic"
    assert check_dataset(ds)["balanced"]
    assert dataset_checksum(ds) == dataset_checksum(again)
    assert not np.array_equal(ds.x_train, other.x_train)
    assert not np.array_equal(ds.y_train, other.y_train)
    # Train and test use independent randomness, not the same draws.
    assert not np.array_equal(ds.x_train[:100], ds.x_test)
    # Labels are shuffled, not round-robin.
    assert not np.array_equal(ds.y_train, np.arange(200) % 10)


def _phase_invariant_features(x: np.ndarray) -> np.ndarray:
    """Low-frequency Fourier magnitudes of the gray image (orientation, frequency) and colour."""
    gray = x.astype(np.float64).mean(axis=-1)
    spectrum = np.abs(np.fft.fft2(gray - gray.mean(axis=(1, 2), keepdims=True)))
    low = spectrum[:, :6, :].reshape(len(x), -1)
    low /= np.linalg.norm(low, axis=1, keepdims=True)
    colour = x.reshape(len(x), -1, 3).mean(axis=1)
    colour /= colour.sum(axis=1, keepdims=True)
    return np.concatenate([low, 3 * colour], axis=1)


def test_synthetic_is_learnable():
    ds = make_synthetic(1000, 500, seed=0)
    train = _phase_invariant_features(ds.x_train)
    test = _phase_invariant_features(ds.x_test)
    means = np.stack([train[ds.y_train == label].mean(axis=0) for label in range(10)])
    distances = ((test[:, None, :] - means[None]) ** 2).sum(axis=-1)
    accuracy = (distances.argmin(axis=1) == ds.y_test).mean()
    assert accuracy > 0.8  # chance is 0.1


def _valid_dataset() -> Dataset:
    return make_synthetic(40, 20, seed=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ds: {"x_train": ds.x_train.astype(np.float32)}, r"train images.*float32.*uint8"),
        (lambda ds: {"x_test": ds.x_test[:, :, :16]}, r"test images.*shape \(20, 32, 16, 3\)"),
        (lambda ds: {"y_train": ds.y_train.astype(np.float64)}, r"train labels.*integers"),
        (lambda ds: {"y_test": ds.y_test[:, None]}, r"test labels.*1-D"),
        (lambda ds: {"y_train": ds.y_train[:-1]}, r"train has 40 images but 39 labels"),
        (lambda ds: {"y_test": np.where(ds.y_test == 0, 10, ds.y_test)}, r"test labels.*\[0, 9\]"),
        (lambda ds: {"y_test": np.where(ds.y_test == 0, -1, ds.y_test)}, r"test labels.*\[-1"),
        (
            lambda ds: {"y_train": np.where(ds.y_train == 7, 6, ds.y_train)},
            r"train has no samples of class.*horse",
        ),
    ],
)
def test_check_dataset_rejects(change, message):
    ds = _valid_dataset()
    with pytest.raises(DataError, match=message):
        check_dataset(replace(ds, **change(ds)))


def test_check_dataset_report():
    ds = make_synthetic(43, 20, seed=0)
    report = check_dataset(ds)
    assert report == {
        "train_samples": 43,
        "test_samples": 20,
        "train_class_counts": [5, 5, 5, 4, 4, 4, 4, 4, 4, 4],
        "test_class_counts": [2] * 10,
        "balanced": False,
    }


def _sorted_labels(per_class: int = 30) -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat(np.arange(10), per_class)
    x = np.arange(len(y))  # the sample's own index, to trace what was picked
    return x, y


def test_class_balanced_subset_counts_and_order():
    x, y = _sorted_labels()
    xs, ys = class_balanced_subset(x, y, 53, seed=0, num_classes=10)
    np.testing.assert_array_equal(np.bincount(ys, minlength=10), [6, 6, 6, 5, 5, 5, 5, 5, 5, 5])
    np.testing.assert_array_equal(y[xs], ys)  # images stay paired with their labels
    assert len(np.unique(xs)) == 53
    assert np.any(np.diff(ys) < 0)  # shuffled, not sorted by class


def test_class_balanced_subset_is_seeded():
    x, y = _sorted_labels()
    first = class_balanced_subset(x, y, 50, seed=1, num_classes=10)
    again = class_balanced_subset(x, y, 50, seed=1, num_classes=10)
    other = class_balanced_subset(x, y, 50, seed=2, num_classes=10)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])


def test_class_balanced_subset_too_large():
    x, y = _sorted_labels(per_class=3)
    with pytest.raises(DataError, match="subset of 31 samples from 30"):
        class_balanced_subset(x, y, 31, seed=0, num_classes=10)
    with pytest.raises(DataError, match="Class 9 has 1 samples.*needs 2"):
        class_balanced_subset(x[:-2], y[:-2], 20, seed=0, num_classes=10)


def test_subset_dataset_sizes():
    ds = make_synthetic(100, 60, seed=0)
    both = subset_dataset(ds, 30, 20, seed=5)
    assert len(both.y_train) == 30 and len(both.y_test) == 20
    assert check_dataset(both)["balanced"]
    train_only = subset_dataset(ds, 30, None, seed=5)
    np.testing.assert_array_equal(train_only.x_train, both.x_train)
    np.testing.assert_array_equal(train_only.x_test, ds.x_test)
    assert subset_dataset(ds, None, None, seed=5) is ds


def test_save_load_round_trip(tmp_path: Path):
    ds = make_synthetic(50, 30, seed=2)
    path = tmp_path / "sub" / "data.npz"
    metadata = save_dataset(ds, path)
    loaded = load_dataset(path)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        original, restored = getattr(ds, key), getattr(loaded, key)
        assert restored.dtype == original.dtype
        np.testing.assert_array_equal(restored, original)
    assert (loaded.class_names, loaded.source, loaded.origin) == (
        ds.class_names,
        ds.source,
        ds.origin,
    )
    assert metadata["checksum"] == dataset_checksum(ds) == dataset_checksum(loaded)
    assert load_metadata(path) == metadata
    assert metadata["train_class_counts"] == [5] * 10
    assert sorted(os.listdir(path.parent)) == ["data.npz"]


def test_failed_save_leaves_no_temp_file(tmp_path: Path):
    target = tmp_path / "data.npz"
    target.mkdir()  # os.replace cannot put a file over a folder
    with pytest.raises(OSError):
        save_dataset(_valid_dataset(), target)
    assert sorted(os.listdir(tmp_path)) == ["data.npz"]
    assert not any(target.iterdir())


def test_load_rejects_other_files(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "missing.npz")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(DataError, match=r"other\.npz.*lacks"):
        load_dataset(other)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(DataError, match=r"text\.npz.*cannot be read"):
        load_metadata(text)


def test_load_detects_corruption(tmp_path: Path):
    ds = _valid_dataset()
    path = tmp_path / "data.npz"
    save_dataset(ds, path)
    with np.load(path) as archive:
        contents = dict(archive)
    contents["y_test"] = np.roll(contents["y_test"], 1)
    np.savez(path, **contents)
    with pytest.raises(DataError, match="checksum"):
        load_dataset(path)


def test_load_source_synthetic_with_subset():
    config = {
        "source": "synthetic",
        "train_samples": 50,
        "test_samples": 20,
        "subset_seed": 1,
        "synthetic": {"train_samples": 100, "test_samples": 40, "seed": 3, "noise": 10.0},
    }
    ds = load_source(config)
    assert len(ds.y_train) == 50 and len(ds.y_test) == 20
    expected = subset_dataset(make_synthetic(100, 40, seed=3, noise=10.0), 50, 20, seed=1)
    assert dataset_checksum(ds) == dataset_checksum(expected)


def test_load_source_image_folder(image_folder: Path):
    ds = load_source({"source": "image_folder", "image_folder": str(image_folder)})
    assert ds.source == "image_folder" and len(ds.y_train) == 32


def test_synthetic_source_labels_follow_configured_class_list():
    synthetic = {"train_samples": 100, "test_samples": 40, "seed": 3}
    classes = list(reversed(CLASS_NAMES))
    ds = load_source({"source": "synthetic", "synthetic": synthetic, "classes": classes})
    plain = make_synthetic(100, 40, seed=3)
    assert ds.class_names == tuple(classes)
    np.testing.assert_array_equal(ds.x_train, plain.x_train)
    np.testing.assert_array_equal(ds.y_train, 9 - plain.y_train)
    np.testing.assert_array_equal(ds.y_test, 9 - plain.y_test)
    default = load_source({"source": "synthetic", "synthetic": synthetic})
    assert dataset_checksum(default) == dataset_checksum(plain)


def test_synthetic_source_rejects_other_class_names():
    classes = ["car" if name == "automobile" else name for name in CLASS_NAMES]
    expected = (
        r"'synthetic' has CIFAR-10's ten classes.*lacks \['automobile'\] and has extra "
        r"\['car'\]"
    )
    with pytest.raises(DataError, match=expected):
        load_source({"source": "synthetic", "classes": classes})


def test_load_source_unknown():
    with pytest.raises(DataError, match="Unknown data.source 'mnist'"):
        load_source({"source": "mnist"})


@pytest.mark.slow
def test_keras_source_without_network_explains_the_way_out(tmp_path: Path):
    env = {**os.environ, "KERAS_HOME": str(tmp_path), "PYTHONPATH": str(SRC_DIR)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from quantinit.data import load_keras_cifar10; load_keras_cifar10()",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "DataError" in result.stderr
    assert "could not be downloaded or read" in result.stderr
    assert "data.source: image_folder" in result.stderr
    assert str(tmp_path / "datasets" / "cifar-10-batches-py-target_archive") in result.stderr


SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.mark.skipif(not SHARED_ARCHIVE.exists(), reason="no ../shared CIFAR-10 JPEG copy here")
def test_real_cifar10_jpeg_copy_loads(tmp_path: Path):
    """A slice of the real data set (first images of every class) through the loader."""
    import tarfile

    wanted = {"train": 20, "test": 5}
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(SHARED_ARCHIVE) as archive:
        for member in archive:
            parts = Path(member.name).parts  # cifar10-jpeg/<split>/<class>/<file>
            if not member.isfile() or len(parts) != 4:
                continue
            key = (parts[1], parts[2])
            if taken.get(key, 0) < wanted[parts[1]]:
                archive.extract(member, tmp_path, filter="data")
                taken[key] = taken.get(key, 0) + 1
    dataset = load_image_folder(tmp_path / "cifar10-jpeg")
    assert dataset.class_names == CLASS_NAMES
    report = check_dataset(dataset)
    assert report["train_class_counts"] == [20] * 10
    assert report["test_class_counts"] == [5] * 10
    # real photographs: varied pixels, not constant or synthetic patterns
    assert dataset.x_train.std() > 40 and len(np.unique(dataset.x_train)) > 200
