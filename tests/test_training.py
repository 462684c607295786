"""Learning-rate schedule, outcome classification, reproducibility, resume and divergence."""

import functools
import json

import numpy as np
import pytest

from quantinit.models import build_model
from quantinit.training import (
    STATUS_DIVERGED,
    STATUS_NOT_LEARNING,
    STATUS_OK,
    classify_outcome,
    epoch_order,
    lr_at_epoch,
    make_lr_schedule,
    train_cell,
)

AUGMENTATION = dict(
    width_shift=0.1, height_shift=0.1, zoom=0.1, rotation=15, horizontal_flip=True,
    vertical_flip=True,
)  # fmt: skip


def training_config(**overrides):
    config = dict(
        epochs=2, batch_size=32, learning_rate=0.01, momentum=0.9, lr_boundaries=[1],
        lr_factor=0.1, validate_every=1, not_learning_margin=0.02, deterministic=True,
        augmentation=AUGMENTATION,
    )  # fmt: skip
    config.update(overrides)
    return config


def test_paper_schedule_by_epoch():
    lrs = [lr_at_epoch(e, 0.01, [75, 120, 170], 0.1) for e in (0, 74, 75, 119, 120, 169, 170, 199)]
    np.testing.assert_allclose(lrs, [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_keras_schedule_equals_epoch_schedule_at_every_step():
    steps_per_epoch = 7
    schedule = make_lr_schedule(0.01, [2, 4], 0.1, steps_per_epoch)
    for step in range(6 * steps_per_epoch):
        expected = lr_at_epoch(step // steps_per_epoch, 0.01, [2, 4], 0.1)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6), step


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a, b = epoch_order(100, seed=0, epoch=3), epoch_order(100, seed=0, epoch=3)
    np.testing.assert_array_equal(a, b)
    assert sorted(a) == list(range(100))
    assert not np.array_equal(a, epoch_order(100, seed=0, epoch=4))
    assert not np.array_equal(a, epoch_order(100, seed=1, epoch=3))


def row(epoch, loss, accuracy, val_accuracy):
    return dict(epoch=epoch, loss=loss, accuracy=accuracy, val_accuracy=val_accuracy)


def test_classify_outcome():
    learned = [row(1, 2.0, 0.3, 0.35)]
    assert classify_outcome(learned, False, 0.02, 10)[0] == STATUS_OK
    chance = [row(1, 2.3, 0.5, 0.105)]  # validation decides when present
    assert classify_outcome(chance, False, 0.02, 10)[0] == STATUS_NOT_LEARNING
    no_val = [row(1, 2.3, 0.11, None)]
    assert classify_outcome(no_val, False, 0.02, 10)[0] == STATUS_NOT_LEARNING
    diverged = [row(1, 2.1, 0.2, 0.2), row(2, float("nan"), 0.1, None)]
    status, reason = classify_outcome(diverged, True, 0.02, 10)
    assert status == STATUS_DIVERGED and "epoch 2" in reason and "2.1" in reason
    nan_weights = [row(1, 2.1, 0.2, 0.2), row(2, 2.3026, 0.1, None)]
    status, reason = classify_outcome(nan_weights, True, 0.02, 10)
    assert status == STATUS_DIVERGED and "non-finite weights after epoch 2" in reason


def separable_images(n, seed):
    """Images whose class is the brightest of 10 fixed regions: learnable in an epoch."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 32, 32, 3)).astype(np.uint8)
    for i, label in enumerate(labels):
        row_, col = divmod(int(label), 5)
        images[i, 4 + 12 * row_ : 14 + 12 * row_, 1 + 6 * col : 6 + 6 * col] = 250
    return images, labels


def run(
    state_dir, epochs, arch="Regular_Conv_With_BN", init="HeUni", fingerprint="f", build=None, **cfg
):
    x, y = separable_images(320, seed=0)
    build = build or functools.partial(
        build_model, arch, init, 0, width_multiplier=0.25, bn_momentum=0.9
    )
    return train_cell(
        build, x, y, x[:64], y[:64], training_config(epochs=epochs, **cfg), seed=0,
        state_dir=state_dir, run_fingerprint=fingerprint, analyze_epochs=[1, 2, 3],
        log=lambda message: None,
    )  # fmt: skip


def snapshot_weights(state_dir, epoch):
    import keras

    return keras.models.load_model(state_dir / "snapshots" / f"epoch{epoch}.keras").get_weights()


@pytest.mark.slow
def test_resumed_training_is_bit_identical_to_uninterrupted(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    result = run(straight, epochs=3)
    run(resumed, epochs=1)
    progress = json.loads((resumed / "progress.json").read_text())
    assert progress["epochs_completed"] == 1
    result_resumed = run(resumed, epochs=3)
    assert [r["epoch"] for r in result_resumed["history"]] == [1, 2, 3]
    assert [r["loss"] for r in result_resumed["history"]] == [r["loss"] for r in result["history"]]
    for a, b in zip(snapshot_weights(straight, 3), snapshot_weights(resumed, 3), strict=True):
        np.testing.assert_array_equal(a, b)
    # a different configuration does not resume from this state
    other = run(resumed, epochs=1, fingerprint="other")
    assert len(other["history"]) == 1


@pytest.mark.slow
def test_divergence_stops_at_once_and_keeps_last_finite_state(tmp_path):
    result = run(
        tmp_path, epochs=6, arch="Regular_Conv_No_BN", init="RandNorm_Large", lr_boundaries=[]
    )
    assert result["status"] == STATUS_DIVERGED
    assert len(result["history"]) < 6
    assert not np.isfinite(result["history"][-1]["loss"])
    assert "non-finite loss" in result["reason"]
    assert (tmp_path / "snapshots" / "last.keras").is_file()


@pytest.mark.slow
def test_non_finite_weights_with_a_finite_loss_are_divergence(tmp_path):
    """Seen in the quick preset (Regular_Conv_No_BN, RandNorm_Med): NaN conv kernels feed
    ReLU, the network outputs uniform scores and the loss stays at ln 10."""

    def build_with_nan_kernel():
        model = build_model("Regular_Conv_No_BN", "HeUni", 0, width_multiplier=0.25)
        layer = model.get_layer("block1_conv")
        kernel, bias = layer.get_weights()
        layer.set_weights([np.full_like(kernel, np.nan), bias])
        return model

    result = run(tmp_path, epochs=3, build=build_with_nan_kernel)
    assert np.isfinite(result["history"][0]["loss"])  # the loss alone would not tell
    assert result["status"] == STATUS_DIVERGED
    assert len(result["history"]) == 1
    assert "non-finite weights after epoch 1" in result["reason"]
