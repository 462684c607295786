"""Resumable, seeded training of one cell, with divergence detection.

Reproducibility: the initial weights come from seeded initializers; the data order of
epoch e is a permutation drawn from (seed, e); the augmentation layers' random state is
reset to a value derived from (seed, e) at the start of every epoch. So a run killed after
epoch k and resumed from its saved state continues exactly as if it had never stopped.

The resumable state lives in a folder that is not a Snakemake output, one per cell and
training configuration (`state_folder`: keyed by the run's fingerprint, so two
configurations never meet in it), locked while a job uses it (`locked_state`):
    <state_dir>/progress.json         epochs done, history, fingerprint (commit point)
    <state_dir>/epoch<k>.keras        the model with its optimizer state after epoch k
    <state_dir>/snapshots/epoch<E>.keras   inference model at each analysed epoch E
    <state_dir>/snapshots/epoch<E>.layers.npz   its layers and weights, for numpy-only stages
The train rule deletes it once the cell's outputs are written: it exists only to finish an
interrupted run, so a rerun of a finished cell trains from scratch.

Preemption: SIGTERM (what SLURM sends before its time limit) stops training at the next
batch; the unfinished epoch is dropped, the state of the last finished epoch is already on
disk, and train_cell raises TrainingTerminated so the job exits with an error and a retry
(or the next run) resumes after that epoch.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from quantinit.io import atomic_path, write_json
from quantinit.registry import NUM_CLASSES, STATUS_DIVERGED, STATUS_NOT_LEARNING, STATUS_OK


class TrainingTerminated(Exception):
    """Training stopped on SIGTERM; the state after `epochs_completed` epochs is saved."""

    def __init__(self, epochs_completed: int, epochs: int):
        super().__init__(
            f"stopped by SIGTERM: the state after epoch {epochs_completed} of {epochs} is "
            "saved; the next run resumes from it"
        )
        self.epochs_completed = epochs_completed


class _Termination:
    """Records SIGTERM while installed (main thread only) instead of dying at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        self.requested = True

    def __enter__(self):
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self._previous)


def lr_at_epoch(epoch: int, base_lr: float, boundaries, factor: float) -> float:
    """Learning rate of 0-based `epoch`: base_lr * factor ** (boundaries already passed).

    A boundary b means "after b epochs": with boundaries [75, 120, 170] the 76th epoch
    (epoch index 75) is the first at base_lr * factor.
    """
    return base_lr * factor ** sum(1 for b in boundaries if epoch >= b)


def make_lr_schedule(base_lr: float, boundaries, factor: float, steps_per_epoch: int):
    """Keras schedule over optimizer steps equal to lr_at_epoch at every step.

    The optimizer evaluates the schedule at its iteration count before the update; the
    first step of epoch b has iteration b * steps_per_epoch, and PiecewiseConstantDecay
    switches only for steps strictly above a boundary, hence the -1.
    """
    import keras

    boundaries = sorted(boundaries)
    if not boundaries:
        return base_lr
    steps = [b * steps_per_epoch - 1 for b in boundaries]
    values = [lr_at_epoch(b, base_lr, boundaries, factor) for b in [0, *boundaries]]
    return keras.optimizers.schedules.PiecewiseConstantDecay(steps, values)


def make_optimizer(training: dict, steps_per_epoch: int):
    """The training section's optimizer (sgd with momentum, or adam) on its learning-rate
    schedule."""
    import keras

    learning_rate = make_lr_schedule(
        training["learning_rate"], training["lr_boundaries"], training["lr_factor"], steps_per_epoch
    )
    optimizer = training.get("optimizer", "sgd")
    if optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=training["momentum"])
    raise ValueError(f"unknown optimizer {optimizer!r}; allowed: sgd, adam")


def make_loss(label_smoothing: float):
    """(loss, accuracy metric) of training. Keras' sparse cross-entropy has no label
    smoothing, so a smoothed loss takes one-hot targets (training_targets)."""
    import keras

    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(), "accuracy"
    return (
        keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        keras.metrics.CategoricalAccuracy(name="accuracy"),
    )


def training_targets(labels: np.ndarray, label_smoothing: float) -> np.ndarray:
    """What `fit` takes as targets: the integer labels, or one-hot rows with smoothing."""
    if not label_smoothing:
        return labels
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def make_augmentation(augmentation: dict, seed: int):
    """Keras preprocessing layers for the paper's shift, zoom, flip and rotation; none when
    augmentation.enabled is false."""
    import keras

    layers = []
    if not augmentation.get("enabled", True):
        return keras.Sequential(layers, name="augmentation")
    shift_h, shift_w = augmentation["height_shift"], augmentation["width_shift"]
    if shift_h or shift_w:
        layers.append(
            keras.layers.RandomTranslation(shift_h, shift_w, fill_mode="nearest", seed=seed + 1)
        )
    if augmentation["zoom"]:
        z = augmentation["zoom"]
        layers.append(keras.layers.RandomZoom(z, z, fill_mode="nearest", seed=seed + 2))
    flip = {
        (True, True): "horizontal_and_vertical",
        (True, False): "horizontal",
        (False, True): "vertical",
    }.get((augmentation["horizontal_flip"], augmentation["vertical_flip"]))
    if flip:
        layers.append(keras.layers.RandomFlip(flip, seed=seed + 3))
    if augmentation["rotation"]:
        layers.append(
            keras.layers.RandomRotation(
                augmentation["rotation"] / 360.0, fill_mode="nearest", seed=seed + 4
            )
        )
    return keras.Sequential(layers, name="augmentation")


def make_augmenter(augmentation, image_shape, batch_size: int):
    """A function that passes an epoch's images through `augmentation`, batch by batch.

    Training augments each epoch before `fit` rather than with the augmentation layers as
    the model's first layers: the batches are bit-identical (same layers, same random
    state, same batch boundaries), and the compiled training step can then use XLA, which
    Keras' random translation, zoom and rotation layers do not support.
    """
    import tensorflow as tf

    if not augmentation.layers:
        return lambda images: np.asarray(images, dtype=np.float32)
    augmentation.build((None, *image_shape))
    signature = tf.TensorSpec((None, *image_shape), tf.float32)
    augment_batch = tf.function(
        lambda batch: augmentation(batch, training=True), input_signature=[signature]
    )

    def augment(images):
        batches = [
            augment_batch(np.asarray(images[start : start + batch_size], dtype=np.float32))
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate([batch.numpy() for batch in batches])

    return augment


def epoch_seed(seed: int, epoch: int) -> int:
    """A 31-bit seed that is a function of (seed, epoch) only."""
    digest = hashlib.sha256(f"{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def reset_augmentation_state(augmentation, seed: int, epoch: int) -> None:
    """Set every random augmentation layer's generator state from (seed, epoch)."""
    base = epoch_seed(seed, epoch)
    for index, layer in enumerate(augmentation.layers):
        for generator in layer._seed_generators:
            generator.state.assign(np.array([base + index, 0], dtype=generator.state.dtype))


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def fingerprint(spec: dict) -> str:
    """Stable hash of everything that determines a training run."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def state_folder(cell_state_dir: str | Path, run_fingerprint: str) -> Path:
    """The resume state of one cell under one training configuration."""
    return Path(cell_state_dir) / run_fingerprint[:16]


class StateInUse(RuntimeError):
    """Another process holds the lock of a training state folder."""


@contextmanager
def locked_state(state_dir: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of `state_dir` (the file `<state_dir>.lock` beside it).

    A second job that would resume the same state fails at once with StateInUse naming the
    holder, instead of both writing one folder. POSIX record locks (fcntl), which network
    file systems with lock support (NFS v4, Lustre, GPFS) honour across nodes; the kernel
    releases them when the holder dies, so a killed job leaves no stale lock.
    """
    state_dir = Path(state_dir)
    lock_path = state_dir.with_name(f"{state_dir.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise StateInUse(
                f"the training state {state_dir} is in use by {holder}: the same cell with "
                "the same configuration is being trained by another job (two Snakemake runs "
                "with the same state_dir?). Wait for it to finish, or give this run another "
                "state_dir."
            ) from None
        handle.truncate(0)
        handle.write(
            f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        )
        handle.flush()
        try:
            yield state_dir
        finally:
            handle.truncate(0)
            fcntl.lockf(handle, fcntl.LOCK_UN)


def classify_outcome(history: list[dict], diverged: bool, margin: float, num_classes: int):
    """(status, reason) of a finished run from its per-epoch history."""
    if diverged:
        last = history[-1] if history else None
        epoch = last["epoch"] if last else 1
        if last is not None and math.isfinite(last["loss"]):
            # NaN kernels followed by ReLU can give uniform, finite outputs (loss ln 10)
            return STATUS_DIVERGED, (
                f"non-finite weights after epoch {epoch}; epoch loss {last['loss']:.4g}"
            )
        finite = [row["loss"] for row in history if math.isfinite(row["loss"])]
        return STATUS_DIVERGED, (
            f"non-finite loss in epoch {epoch}; "
            f"last finite epoch loss: {finite[-1] if finite else 'none'}"
        )
    final = history[-1]
    accuracy = final["val_accuracy"]
    if accuracy is None or not math.isfinite(accuracy):
        accuracy = final["accuracy"]
    chance = 1.0 / num_classes
    if accuracy < chance + margin:
        return STATUS_NOT_LEARNING, (
            f"final accuracy {accuracy:.4f} below chance {chance:.2f} + margin {margin}"
        )
    return STATUS_OK, f"final accuracy {accuracy:.4f}"


def all_finite(arrays) -> bool:
    """True when no array holds a NaN or an infinity."""
    return all(np.isfinite(a).all() for a in arrays)


def _save_keras_atomic(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


def save_snapshot(model, path: Path) -> None:
    """An analysed model: the Keras file `path` and, beside it, its layers for the numpy-only
    stages (snapshot_layers_path; layerfiles.save_layers)."""
    from quantinit.analysis import layer_specs, layer_weights
    from quantinit.layerfiles import save_layers

    save_layers(snapshot_layers_path(path), layer_specs(model), layer_weights(model))
    _save_keras_atomic(model, path)


def snapshot_layers_path(path: Path) -> Path:
    """epoch<E>.keras -> epoch<E>.layers.npz"""
    return Path(path).with_suffix(".layers.npz")


def evaluate_probabilities(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of softmax outputs against integer labels."""
    picked = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    return loss, float(np.mean(np.argmax(probabilities, axis=1) == labels))


class _DivergenceMonitor:
    """Keras callback factory: stop at the first batch whose running loss is not finite,
    or at the first batch after a SIGTERM."""

    @staticmethod
    def create(termination: _Termination):
        import keras

        class DivergenceMonitor(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.diverged_at_batch = None

            def on_train_batch_end(self, batch, logs=None):
                loss = (logs or {}).get("loss")
                if loss is not None and not math.isfinite(float(loss)):
                    self.diverged_at_batch = batch
                    self.model.stop_training = True
                if termination.requested:
                    self.model.stop_training = True

        return DivergenceMonitor()


def train_cell(
    build_core: Callable[..., object],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    training: dict,
    seed: int,
    state_dir: Path,
    run_fingerprint: str,
    analyze_epochs: list[int],
    log: Callable[[str], None] = print,
    dynamics: Callable | None = None,
) -> dict:
    """Train (or resume training) one cell; return its status record.

    `build_core(dtype_policy=...)` builds the cell's model. `training` is the config's
    training section; its `precision` is the Keras dtype policy of training. Dynamics and
    snapshots always come from a float32 copy of the weights (variables are float32 under
    every policy), so the analysis of a mixed-precision run is computed as for float32.
    Keeps resumable state in `state_dir` and inference snapshots at `analyze_epochs` in
    `state_dir/snapshots`. A non-finite loss ends training at once, non-finite weights at
    the end of the epoch (NaN kernels followed by ReLU can give finite, uniform outputs):
    status diverged; the last finite state is kept as snapshots/last.keras.
    `dynamics(core_model)`, if given, returns a callable that maps an epoch number to
    per-layer statistic rows; they are recorded at initialization (epoch 0) and after every
    epoch, with their cost in the history's dynamics_seconds.
    Returns {"status", "reason", "epochs_completed", "history", "dynamics", ...}.
    """
    import keras
    import tensorflow as tf

    state_dir = Path(state_dir)
    snapshot_dir = state_dir / "snapshots"
    progress_path = state_dir / "progress.json"
    epochs = training["epochs"]
    batch_size = training["batch_size"]
    precision = training.get("precision", "float32")
    label_smoothing = training.get("label_smoothing", 0.0)
    targets = training_targets(y_train, label_smoothing)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)

    deterministic = training.get("deterministic", True)
    jit_compile = training.get("jit_compile", False)
    if jit_compile and deterministic:
        raise ValueError(
            "training.jit_compile: true needs training.deterministic: false "
            "(Keras does not compile with XLA under TensorFlow's op determinism)"
        )
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        from tensorflow.python.framework import config as tf_config  # no public switch-off

        tf_config.disable_op_determinism()

    progress = None
    if progress_path.exists():
        progress = json.loads(progress_path.read_text())
        if progress.get("fingerprint") != run_fingerprint:
            log(f"state in {state_dir} belongs to another configuration: starting from scratch")
            progress = None
    if progress is None:
        shutil.rmtree(state_dir, ignore_errors=True)
    snapshot_dir.mkdir(parents=True, exist_ok=True)

    if progress is not None and progress["epochs_completed"] > 0:
        start_epoch = progress["epochs_completed"]
        history = progress["history"]
        dynamics_rows = progress["dynamics"]
        core = keras.models.load_model(state_dir / progress["model_file"])
        log(f"resuming from {progress['model_file']} after epoch {start_epoch} of {epochs}")
    else:
        start_epoch, history, dynamics_rows = 0, [], []
        core = build_core(dtype_policy=precision)
        initial_weights = core.get_weights()  # the last finite state until epoch 1 ends
        optimizer = make_optimizer(training, steps_per_epoch)
        if precision == "mixed_float16":  # float16 gradients underflow without loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        loss, accuracy_metric = make_loss(label_smoothing)
        core.compile(
            optimizer=optimizer, loss=loss, metrics=[accuracy_metric], jit_compile=jit_compile
        )
        log(
            f"starting training: {epochs} epochs, {len(x_train)} images, "
            f"{steps_per_epoch} steps per epoch"
        )
    if core.jit_compile != jit_compile:
        raise RuntimeError(f"Keras did not honour jit_compile={jit_compile} for {core.name}")
    augmentation = make_augmentation(training["augmentation"], seed)
    augment = make_augmenter(augmentation, x_train.shape[1:], batch_size)
    float32_core = core if precision == "float32" else build_core(dtype_policy="float32")

    def float32_weights_of(trained):
        if float32_core is not trained:
            float32_core.set_weights(trained.get_weights())
        return float32_core

    record_dynamics = dynamics(float32_core) if dynamics else None
    if record_dynamics and start_epoch == 0:
        dynamics_rows = record_dynamics(0)

    diverged = False
    validate_every = training.get("validate_every", 1)
    run_started = time.monotonic()
    with _Termination() as termination:
        for epoch in range(start_epoch, epochs):
            if termination.requested:
                raise TrainingTerminated(epoch, epochs)
            reset_augmentation_state(augmentation, seed, epoch)
            order = epoch_order(len(x_train), seed, epoch)
            monitor = _DivergenceMonitor.create(termination)
            started = time.monotonic()
            fit = core.fit(
                augment(x_train[order]),
                targets[order],
                batch_size=batch_size,
                epochs=epoch + 1,
                initial_epoch=epoch,
                shuffle=False,
                verbose=0,
                callbacks=[monitor],
            )
            if termination.requested:  # the unfinished epoch is dropped
                log(f"epoch {epoch + 1}/{epochs}: SIGTERM, stopping")
                raise TrainingTerminated(epoch, epochs)
            loss = float(fit.history["loss"][-1])
            accuracy = float(fit.history["accuracy"][-1])
            row = {
                "epoch": epoch + 1,
                "loss": loss,
                "accuracy": accuracy,
                "val_loss": None,
                "val_accuracy": None,
                "lr": lr_at_epoch(
                    epoch,
                    training["learning_rate"],
                    training["lr_boundaries"],
                    training["lr_factor"],
                ),
                "seconds": 0.0,
                "dynamics_seconds": 0.0,
            }
            loss_finite = monitor.diverged_at_batch is None and math.isfinite(loss)
            if not loss_finite or not all_finite(core.get_weights()):
                diverged = True
                row["seconds"] = time.monotonic() - started
                history.append(row)
                what = (
                    f"loss is not finite (batch {monitor.diverged_at_batch})"
                    if not loss_finite
                    else f"weights are not finite (epoch loss {loss:.4g})"
                )
                log(f"epoch {epoch + 1}/{epochs}: {what}: diverged")
                break
            last_epoch = epoch + 1 == epochs
            if (validate_every and (epoch + 1) % validate_every == 0) or last_epoch:
                probabilities = core.predict(x_test, batch_size=512, verbose=0)
                row["val_loss"], row["val_accuracy"] = evaluate_probabilities(probabilities, y_test)
            row["seconds"] = time.monotonic() - started
            analysed = epoch + 1 in analyze_epochs
            if record_dynamics or analysed:
                float32_weights_of(core)  # once per epoch, for dynamics and snapshot
            if record_dynamics:
                dynamics_started = time.monotonic()
                dynamics_rows += record_dynamics(epoch + 1)
                row["dynamics_seconds"] = time.monotonic() - dynamics_started
            history.append(row)

            if analysed:
                save_snapshot(float32_core, snapshot_dir / f"epoch{epoch + 1}.keras")
            model_file = f"epoch{epoch + 1}.keras"
            _save_keras_atomic(core, state_dir / model_file)
            write_json(
                {
                    "fingerprint": run_fingerprint,
                    "epochs_completed": epoch + 1,
                    "model_file": model_file,
                    "history": history,
                    "dynamics": dynamics_rows,
                },
                progress_path,
            )
            for old in state_dir.glob("epoch*.keras"):
                if old.name != model_file:
                    old.unlink()
            done = epoch + 1 - start_epoch
            eta = (time.monotonic() - run_started) / done * (epochs - epoch - 1)
            val = f" val_acc {row['val_accuracy']:.4f}" if row["val_accuracy"] is not None else ""
            log(
                f"epoch {epoch + 1}/{epochs}: loss {loss:.4f} acc {accuracy:.4f}{val} "
                f"lr {row['lr']:.2g} {row['seconds']:.1f}s, eta {eta / 60:.1f} min"
            )

    if diverged:
        # The weights are now non-finite; keep the last finite state for later stages:
        # the last saved epoch, or the initial weights if the first epoch diverged.
        saved = sorted(state_dir.glob("epoch*.keras"))
        if saved:
            last_core = keras.models.load_model(saved[-1])
        else:
            core.set_weights(initial_weights)
            last_core = core
        save_snapshot(float32_weights_of(last_core), snapshot_dir / "last.keras")
    status, reason = classify_outcome(
        history, diverged, training.get("not_learning_margin", 0.02), num_classes=NUM_CLASSES
    )
    log(f"status: {status} ({reason})")
    return {
        "status": status,
        "reason": reason,
        "epochs_completed": len(history) - (1 if diverged else 0),
        "epochs_planned": epochs,
        "history": history,
        "dynamics": dynamics_rows,
    }
