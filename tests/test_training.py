"""Learning-rate schedule, outcome classification, reproducibility, resume and divergence."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quantinit.models import build_model
from quantinit.training import (
    STATUS_DIVERGED,
    STATUS_NOT_LEARNING,
    STATUS_OK,
    StateInUse,
    classify_outcome,
    epoch_order,
    locked_state,
    lr_at_epoch,
    make_lr_schedule,
    state_folder,
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
    state_dir, epochs, arch="Regular_Conv_With_BN", init="HeUni", fingerprint="f", build=None,
    dynamics=None, **cfg,
):  # fmt: skip
    x, y = separable_images(320, seed=0)
    build = build or functools.partial(
        build_model, arch, init, 0, width_multiplier=0.25, bn_momentum=0.9
    )
    return train_cell(
        build, x, y, x[:64], y[:64], training_config(epochs=epochs, **cfg), seed=0,
        state_dir=state_dir, run_fingerprint=fingerprint, analyze_epochs=[1, 2, 3],
        log=lambda message: None, dynamics=dynamics,
    )  # fmt: skip


def snapshot_weights(state_dir, epoch):
    import keras

    return keras.models.load_model(state_dir / "snapshots" / f"epoch{epoch}.keras").get_weights()


def assert_same_training(result, state_dir, other_result, other_state_dir, epoch):
    """Equal per-epoch losses and bit-identical snapshot weights at `epoch`."""
    assert [r["loss"] for r in other_result["history"]] == [r["loss"] for r in result["history"]]
    weights = snapshot_weights(state_dir, epoch), snapshot_weights(other_state_dir, epoch)
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_resumed_training_is_bit_identical_to_uninterrupted(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    result = run(straight, epochs=3)
    run(resumed, epochs=1)
    progress = json.loads((resumed / "progress.json").read_text())
    assert progress["epochs_completed"] == 1
    result_resumed = run(resumed, epochs=3)
    assert [r["epoch"] for r in result_resumed["history"]] == [1, 2, 3]
    assert_same_training(result, straight, result_resumed, resumed, epoch=3)
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
def test_divergence_in_the_first_epoch_keeps_the_initial_weights(tmp_path):
    import keras

    build = functools.partial(
        build_model, "Regular_Conv_No_BN", "RandNorm_Large", 0, width_multiplier=0.25,
        init_settings={"stddev": 20.0},
    )  # fmt: skip
    result = run(tmp_path, epochs=3, build=build, lr_boundaries=[])
    assert result["status"] == STATUS_DIVERGED and result["epochs_completed"] == 0
    kept = keras.models.load_model(tmp_path / "snapshots" / "last.keras").get_weights()
    initial = build(dtype_policy="float32").get_weights()
    assert len(kept) == len(initial)
    for a, b in zip(kept, initial, strict=True):
        np.testing.assert_array_equal(a, b)  # finite: the state before the first update


@pytest.mark.slow
def test_non_finite_weights_with_a_finite_loss_are_divergence(tmp_path):
    """Seen in the quick preset (Regular_Conv_No_BN, RandNorm_Med): NaN conv kernels feed
    ReLU, the network outputs uniform scores and the loss stays at ln 10."""

    def build_with_nan_kernel(dtype_policy):
        model = build_model(
            "Regular_Conv_No_BN", "HeUni", 0, width_multiplier=0.25, dtype_policy=dtype_policy
        )
        layer = model.get_layer("block1_conv")
        kernel, bias = layer.get_weights()
        layer.set_weights([np.full_like(kernel, np.nan), bias])
        return model

    result = run(tmp_path, epochs=3, build=build_with_nan_kernel)
    assert np.isfinite(result["history"][0]["loss"])  # the loss alone would not tell
    assert result["status"] == STATUS_DIVERGED
    assert len(result["history"]) == 1
    assert "non-finite weights after epoch 1" in result["reason"]


def kernel_probe(core):
    """A dynamics recorder that reports the policy and a weight sum of the model it gets."""
    layer = core.get_layer("block1_conv")

    def record(epoch):
        return [
            {
                "epoch": epoch,
                "policy": layer.dtype_policy.name,
                "kernel_sum": float(np.sum(layer.get_weights()[0], dtype=np.float64)),
            }
        ]

    return record


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_in_16_bits_and_analyses_in_float32(tmp_path, precision):
    import keras

    result = run(tmp_path, epochs=2, precision=precision, dynamics=kernel_probe)
    assert result["status"] == STATUS_OK, result["reason"]
    core = keras.models.load_model(tmp_path / "epoch2.keras")
    assert core.get_layer("block1_conv").dtype_policy.name == precision
    assert core.get_layer("softmax").dtype_policy.name == "float32"
    scaled = isinstance(core.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "mixed_float16")

    snapshot = keras.models.load_model(tmp_path / "snapshots" / "epoch2.keras")
    assert {layer.dtype_policy.name for layer in snapshot.layers[1:]} == {"float32"}
    for a, b in zip(snapshot.get_weights(), core.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # dynamics ran on the float32 copy, synchronised with the trained weights
    last = result["dynamics"][-1]
    assert last["epoch"] == 2 and last["policy"] == "float32"
    expected = np.sum(core.get_layer("block1_conv").get_weights()[0], dtype=np.float64)
    assert last["kernel_sum"] == pytest.approx(float(expected), rel=1e-12)

    # the same weights: 16-bit compute differs from float32, but only by rounding
    images, _ = separable_images(64, seed=1)
    low = core.predict(images, verbose=0)
    full = snapshot.predict(images, verbose=0)
    assert low.dtype == np.float32
    assert 0 < np.abs(low - full).max() < 0.05


@pytest.mark.slow
def test_mixed_float16_resume_is_bit_identical(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    result = run(straight, epochs=2, precision="mixed_float16")
    run(resumed, epochs=1, precision="mixed_float16")
    result_resumed = run(resumed, epochs=2, precision="mixed_float16")
    assert_same_training(result, straight, result_resumed, resumed, epoch=2)


@pytest.mark.slow
def test_augmenting_before_fit_equals_augmentation_layers_in_the_model(tmp_path):
    """train_cell augments each epoch outside the model (so XLA can compile the step);
    the same training with the augmentation layers as the model's first layers, as a
    bare Keras user would write it, ends with bit-identical weights."""
    import keras

    from quantinit.training import make_augmentation, reset_augmentation_state

    config = training_config(epochs=1)
    run(tmp_path, epochs=1)
    x, y = separable_images(320, seed=0)
    keras.utils.set_random_seed(0)
    augmentation = make_augmentation(config["augmentation"], seed=0)
    core = build_model("Regular_Conv_With_BN", "HeUni", 0, width_multiplier=0.25, bn_momentum=0.9)
    bare = keras.Sequential([augmentation, core])
    bare.build((None, 32, 32, 3))
    schedule = make_lr_schedule(0.01, [1], 0.1, steps_per_epoch=10)
    bare.compile(keras.optimizers.SGD(schedule, momentum=0.9), "sparse_categorical_crossentropy")
    reset_augmentation_state(augmentation, seed=0, epoch=0)
    order = epoch_order(len(x), seed=0, epoch=0)
    bare.fit(x[order], y[order], batch_size=32, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(snapshot_weights(tmp_path, 1), core.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


ADAM_SMOOTHED = dict(
    optimizer="adam", learning_rate=1e-3, label_smoothing=0.1,
    augmentation={**AUGMENTATION, "enabled": False},
)  # fmt: skip


@pytest.mark.slow
def test_adam_label_smoothing_without_augmentation_is_keras_own(tmp_path):
    """A variant's recipe (Adam, smoothed labels, no augmentation) trains as Keras' Adam on
    the learning-rate schedule with CategoricalCrossentropy(label_smoothing) on the images as
    they are, in the same order: bit-identical weights after an epoch."""
    import keras

    run(tmp_path, epochs=1, **ADAM_SMOOTHED)
    x, y = separable_images(320, seed=0)
    keras.utils.set_random_seed(0)
    core = build_model("Regular_Conv_With_BN", "HeUni", 0, width_multiplier=0.25, bn_momentum=0.9)
    schedule = make_lr_schedule(1e-3, [1], 0.1, steps_per_epoch=10)
    smoothed = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    core.compile(keras.optimizers.Adam(schedule), smoothed)
    order = epoch_order(len(x), seed=0, epoch=0)
    targets = np.eye(10, dtype=np.float32)[y[order]]
    core.fit(x[order].astype(np.float32), targets, batch_size=32, shuffle=False, verbose=0)
    for a, b in zip(snapshot_weights(tmp_path, 1), core.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_adam_variant_resume_is_bit_identical(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    result = run(straight, epochs=2, **ADAM_SMOOTHED)
    assert result["status"] == STATUS_OK, result["reason"]
    run(resumed, epochs=1, **ADAM_SMOOTHED)
    result_resumed = run(resumed, epochs=2, **ADAM_SMOOTHED)
    assert_same_training(result, straight, result_resumed, resumed, epoch=2)


def test_smoothed_loss_is_cross_entropy_against_smoothed_labels():
    """make_loss(a) on training_targets: -sum(((1 - a) * onehot + a / K) * log p), by hand;
    a = 0 keeps the integer labels and the plain cross-entropy."""
    from quantinit.training import make_loss, training_targets

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 8)
    logits = rng.normal(size=(8, 10))
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype("float32")
    loss, _ = make_loss(0.2)
    smoothed = 0.8 * np.eye(10)[labels] + 0.2 / 10
    expected = -np.mean(np.sum(smoothed * np.log(probabilities), axis=1))
    value = float(loss(training_targets(labels, 0.2), probabilities))
    assert value == pytest.approx(expected, rel=1e-5)
    plain, metric = make_loss(0.0)
    assert metric == "accuracy" and training_targets(labels, 0.0) is labels
    expected_plain = -np.mean(np.log(probabilities[np.arange(8), labels]))
    assert float(plain(labels, probabilities)) == pytest.approx(expected_plain, rel=1e-5)


def test_augmentation_switched_off_has_no_layers():
    from quantinit.training import make_augmentation

    assert make_augmentation({**AUGMENTATION, "enabled": False}, seed=0).layers == []
    assert len(make_augmentation(AUGMENTATION, seed=0).layers) == 4


def test_xla_needs_op_determinism_off(tmp_path):
    with pytest.raises(ValueError, match="jit_compile: true needs training.deterministic: false"):
        run(tmp_path, epochs=1, jit_compile=True)
    assert not (tmp_path / "progress.json").exists()


@pytest.mark.slow
def test_xla_training_is_compiled_reproducible_and_resumable(tmp_path):
    import keras

    xla = dict(jit_compile=True, deterministic=False)
    first, second = tmp_path / "first", tmp_path / "second"
    result = run(first, epochs=2, **xla)
    assert result["status"] == STATUS_OK, result["reason"]
    assert keras.models.load_model(first / "epoch2.keras").jit_compile is True
    run(second, epochs=1, **xla)
    resumed = run(second, epochs=2, **xla)
    assert_same_training(result, first, resumed, second, epoch=2)


def test_state_folders_of_two_configurations_differ(tmp_path):
    a, b = state_folder(tmp_path, "a" * 64), state_folder(tmp_path, "b" * 64)
    assert a != b and a.parent == b.parent == tmp_path
    assert state_folder(tmp_path, "a" * 64) == a


HOLD_LOCK = """
import sys, time
from quantinit.training import locked_state
with locked_state(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_locked_state_refuses_a_second_user_until_released(tmp_path):
    state_dir = tmp_path / "cell" / "0123456789abcdef"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(state_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StateInUse, match=f"in use by pid {holder.pid} on ") as refused:
            with locked_state(state_dir):
                pass
        assert str(state_dir) in str(refused.value) and "state_dir" in str(refused.value)
    finally:
        holder.kill()  # a killed holder leaves no stale lock
        holder.wait()
    with locked_state(state_dir) as locked:
        assert locked == state_dir
