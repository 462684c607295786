"""Benchmark of the quantinit workflow: training overhead, per-stage cost, workflow overhead,
evaluation throughput and peak memory, all measured in one run on one machine.

    python benchmarks/run.py            # full (about 10 minutes on 2 cores)
    python benchmarks/run.py --smoke    # tiny sizes (about 1-2 minutes), what CI runs

Writes <out>/results.parquet and <out>/results.json (one row per measurement: group, name,
value, unit, ratio, target, target_met, detail) and prints a table. See benchmarks/README.md
for what every number includes. Targets are reported (met / not met), never asserted.

Every TensorFlow measurement runs in its own worker process (this file with --worker), so
each has a fresh TensorFlow (no state, thread pool or op-determinism flag carried over) and
its own peak RSS.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
SNAKEFILE = REPO / "Snakefile"
if str(SRC) not in sys.path:  # allow `python benchmarks/run.py`
    sys.path.insert(0, str(SRC))

from quantinit.registry import ARCHITECTURES as ARCHITECTURE_SPECS  # noqa: E402
from quantinit.workflow_tools import deep_update, planned_jobs  # noqa: E402

ARCHITECTURES = list(ARCHITECTURE_SPECS)
# Per-cell stages after training, in workflow order (TF_STAGES: which import TensorFlow).
ANALYSIS_STAGES = [
    "export_checkpoint",
    "fold_bn",
    "calibrate",
    "quantize",
    "evaluate",
    "layerwise",
    "quant_sensitivity",
]
# shared by every quantization scheme (under epoch<E>/); the others run per scheme
SHARED_STAGES = {"export_checkpoint", "fold_bn"}
# build_engine runs once per architecture, not per cell: reported beside the chain
ALL_STAGES = ["prepare_data", "train", "build_engine", *ANALYSIS_STAGES]
TF_STAGES = {"train", "build_engine", "evaluate"}
GROUPS = ["training", "stages", "workflow", "evaluation", "memory"]

TARGET_TRAIN_RATIO = 0.95
PAPER_TRAIN_IMAGES = 50_000
TARGET_DRY_RUN_S = 3.0
TARGET_NOOP_S = 10.0


# --------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def worker_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: kilobytes


def schema_defaults() -> dict:
    """The config every omitted key takes: the workflow's schema defaults, filled in by the
    same validation the workflow runs."""
    from snakemake.utils import validate

    from quantinit.config_checks import study_schema_file

    config: dict = {}
    with study_schema_file() as schema:
        validate(config, schema)
    return config


class Rows:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, group, name, value, unit, ratio=None, target=None, met=None, detail=""):
        row = {
            "group": group,
            "name": name,
            "value": float(value),
            "unit": unit,
            "ratio": None if ratio is None else float(ratio),
            "target": target,
            "target_met": None if met is None else bool(met),
            "detail": detail,
        }
        self.rows.append(row)
        return row


def run_worker(kind: str, spec: dict, timeout: float = 1800) -> dict:
    """Run one measurement in a fresh Python process; return its result dict."""
    with tempfile.TemporaryDirectory(prefix="qi-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        spec = {**spec, "tmp": tmp}
        command = [
            sys.executable, str(Path(__file__).resolve()), "--worker", kind,
            "--spec", json.dumps(spec), "--result", str(result_path),
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.run(
            command, capture_output=True, text=True, env=worker_env(), timeout=timeout
        )
        if proc.returncode != 0 or not result_path.exists():
            raise RuntimeError(
                f"worker {kind} {spec} failed (rc {proc.returncode}):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            )
        result = json.loads(result_path.read_text())
        result["process_wall_s"] = time.monotonic() - started
        return result


def median_wall(command: list[str], repeats: int, env=None, cwd=None) -> float:
    times = []
    for _ in range(repeats):
        started = time.monotonic()
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=cwd)
        times.append(time.monotonic() - started)
    return statistics.median(times)


# --------------------------------------------------------------------------- workers


def synthetic_file(folder: Path, train: int, test: int, seed: int = 0) -> str:
    """Generate a synthetic data set once, in the driver, in chunks; save it as .npz.

    Workers load the uint8 arrays, so the generator's float64 temporaries do not count in
    their peak RSS or time.
    """
    import numpy as np

    from quantinit.data import make_synthetic

    path = folder / f"synthetic_{train}_{test}_{seed}.npz"
    if not path.exists():
        data = make_synthetic(train, min(test, 10), seed)
        x_test, y_test = [], []
        for start in range(0, test, 2000):
            chunk = make_synthetic(10, min(2000, test - start), seed + 1 + start)
            x_test.append(chunk.x_test)
            y_test.append(chunk.y_test)
        np.savez(
            path,
            x_train=data.x_train,
            y_train=data.y_train,
            x_test=np.concatenate(x_test),
            y_test=np.concatenate(y_test),
        )
    return str(path)


def _synthetic(spec: dict):
    import types

    import numpy as np

    with np.load(spec["data"]) as stored:
        return types.SimpleNamespace(**{k: stored[k] for k in stored.files})


def _training_settings(epochs: int) -> dict:
    training = schema_defaults()["training"]
    # The paper's recipe (config/config.yaml); the schedule never changes within the run.
    training.update(
        epochs=epochs,
        batch_size=128,
        learning_rate=0.01,
        momentum=0.9,
        lr_boundaries=[75, 120, 170],
        lr_factor=0.1,
    )
    return training


def _build_core(spec: dict, dtype_policy: str = "float32"):
    from quantinit.models import build_model

    return build_model(
        spec["arch"],
        spec["init"],
        spec["seed"],
        width_multiplier=spec["width"],
        bn_momentum=0.9 if spec["width"] < 1 else 0.99,
        dtype_policy=dtype_policy,
    )


def _threads(spec: dict) -> None:
    import tensorflow as tf

    # once per process: TensorFlow refuses a change after its first operation
    if spec.get("threads") and tf.config.threading.get_intra_op_parallelism_threads() == 0:
        tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(min(2, spec["threads"]))


def worker_train_bare(spec: dict) -> dict:
    """keras.Model.fit of the same Sequential([augmentation, model]), validation included."""
    import keras
    from tensorflow.python.framework import config as tf_config

    from quantinit.training import make_augmentation

    _threads(spec)
    tf_config.disable_op_determinism()  # a plain Keras user's default
    data = _synthetic(spec)
    training = _training_settings(spec["epochs"])
    keras.utils.set_random_seed(spec["seed"])
    augmentation = make_augmentation(training["augmentation"], spec["seed"])
    model = keras.Sequential([augmentation, _build_core(spec)], name="bare")
    model.build((None, *data.x_train.shape[1:]))
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    ends: list[float] = []

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.monotonic())

    started = time.monotonic()
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=training["batch_size"],
        epochs=spec["epochs"],
        shuffle=True,
        verbose=0,
        validation_data=(data.x_test, data.y_test),
        validation_batch_size=512,
        callbacks=[EpochEnd()],
    )
    total = time.monotonic() - started
    warm = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    return {
        "first_epoch_s": ends[0] - started,
        "warm_epoch_s": min(warm),
        "total_s": total,
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_train_project(spec: dict) -> dict:
    """quantinit.training.train_cell with LayerDynamics and checkpoints, as rule train runs it."""
    from quantinit.analysis import LayerDynamics
    from quantinit.sampling import calibration_indices
    from quantinit.training import train_cell

    _threads(spec)
    data = _synthetic(spec)
    training = _training_settings(spec["epochs"])
    training.update(spec.get("training_overrides", {}))
    probe_size = min(256, len(data.x_train))
    probe = data.x_train[calibration_indices(len(data.x_train), probe_size, spec["seed"] + 1)]
    stamps: list[tuple[float, str]] = []

    def record(message: str) -> None:
        stamps.append((time.monotonic(), message))

    started = time.monotonic()
    result = train_cell(
        functools.partial(_build_core, spec),
        data.x_train,
        data.y_train,
        data.x_test,
        data.y_test,
        training=training,
        seed=spec["seed"],
        state_dir=Path(spec["tmp"]) / "state",
        run_fingerprint="benchmark",
        analyze_epochs=[],  # a typical epoch: no inference snapshot (only analysed epochs)
        log=record,
        dynamics=lambda core: LayerDynamics(core, probe, 1.0),
    )
    total = time.monotonic() - started
    epochs = spec["epochs"]
    # train_cell logs "epoch k/E: ..." after the epoch's fit, validation, dynamics, checkpoint
    # save, progress.json and old-checkpoint cleanup: log-to-log is an epoch's full cost.
    ends = [t for t, m in stamps if m.startswith("epoch ") and f"/{epochs}:" in m.split()[1]]
    if len(ends) != epochs or result["status"] == "diverged":
        raise RuntimeError(f"unexpected training run: {result['status']}, log {stamps}")
    warm_rows = result["history"][1:]
    return {
        "total_s": total,
        "first_epoch_end_s": ends[0] - started,
        "warm_epoch_total_s": min(b - a for a, b in zip(ends, ends[1:], strict=False)),
        "warm_fit_s": min(r["seconds"] for r in warm_rows),
        "warm_dynamics_s": statistics.median(r["dynamics_seconds"] for r in warm_rows),
        "status": result["status"],
        "peak_rss_mb": peak_rss_mb(),
    }


def _timed(fn, *args, **kwargs):
    started = time.monotonic()
    out = fn(*args, **kwargs)
    return out, time.monotonic() - started


def worker_evaluate(spec: dict) -> dict:
    """Images/s of one inference backend on a synthetic test set, per batch size / threads."""
    import keras

    _threads(spec)
    epoch_dir = Path(spec["epoch_dir"])
    images = _synthetic(spec).x_test
    n = len(images)
    result: dict = {"throughput": {}}

    def calibration_images():
        from quantinit.data import load_dataset
        from quantinit.sampling import calibration_indices

        train = load_dataset(spec["dataset"]).x_train
        return train[calibration_indices(len(train), min(spec["calibration"], len(train)), 0)]

    def measure_keras(model):
        for batch in spec["batch_sizes"]:
            warm = images[: min(n, batch + n % batch)]  # a full and the partial batch: traced
            model.predict(warm, batch_size=batch, verbose=0)
            _, seconds = _timed(model.predict, images, batch_size=batch, verbose=0)
            result["throughput"][f"b{batch}"] = n / seconds

    backend = spec["backend"]
    if backend == "float":
        model, result["load_s"] = _timed(keras.models.load_model, epoch_dir / "model.keras")
        measure_keras(model)
    elif backend == "quint8":  # what rules calibrate, quantize and evaluate do, defaults
        from quantinit.calibration import calibrate
        from quantinit.engine import Engine, QuantizedNetwork
        from quantinit.layerfiles import load_folded, load_tensor_kinds, load_weights
        from quantinit.schemes import clipping_percentile
        from quantinit.tables import quantize, quantized_activation_bounds

        scheme = schema_defaults()["quantization"]["schemes"][0]  # the paper's quint8
        engine_files = (f"{spec['engine']}.tflite", f"{spec['engine']}.json")
        threads = spec["threads"] or None  # 0: LiteRT's default, as TensorFlow's
        folded = load_folded(epoch_dir / "weights.npz")
        layers, _, folded_kernels = load_weights(epoch_dir / "weights.npz")
        engine, result["load_s"] = _timed(Engine.load, *engine_files, num_threads=threads)
        table, result["calibration_s"] = _timed(
            calibrate, engine, folded, calibration_images(),
            load_tensor_kinds(epoch_dir / "weights.npz"), clipping_percentile(scheme),
            scheme["bits"],
        )  # fmt: skip
        quantization = quantize(folded_kernels, {x.name: x.kind for x in layers}, table, scheme)
        bounds = quantized_activation_bounds(quantization)
        for batch in spec["batch_sizes"]:
            engine = Engine.load(*engine_files, num_threads=threads, batch_size=batch)
            network, result["build_s"] = _timed(QuantizedNetwork, engine, folded, bounds, scheme)
            network.configure_all()
            network.predict(images[:batch])  # loads the weights into LiteRT
            _, seconds = _timed(network.predict, images)
            result["throughput"][f"b{batch}"] = n / seconds
    elif backend == "litert":
        from quantinit.tflite import convert_full_integer, run_tflite

        model = keras.models.load_model(epoch_dir / "model.keras")
        calib = calibration_images()
        model_bytes, result["conversion_s"] = _timed(convert_full_integer, model, calib)
        for batch in spec["batch_sizes"]:
            for threads in spec["litert_threads"]:
                run_tflite(model_bytes, images[:batch], batch, num_threads=threads)  # warm
                _, seconds = _timed(run_tflite, model_bytes, images, batch, num_threads=threads)
                result["throughput"][f"b{batch}.t{threads}"] = n / seconds
    else:
        raise ValueError(backend)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def worker_train_pair(spec: dict) -> dict:
    """train_cell, then the bare fit, in one process: machine-speed swings between
    processes (up to 1.6x here) then cancel in their ratio. train_cell's peak RSS is
    measured before the bare fit runs."""
    project = worker_train_project(spec)
    return {"project": project, "bare": worker_train_bare(spec)}


WORKERS = {
    "train_pair": worker_train_pair,
    "train_project": worker_train_project,
    "evaluate": worker_evaluate,
}


# --------------------------------------------------------------------------- 1. training


# GPU switches of the training config, as config keys (XLA needs op determinism off)
SWITCHES = {
    "mixed_float16": {"precision": "mixed_float16"},
    "mixed_bfloat16": {"precision": "mixed_bfloat16"},
    "xla": {"jit_compile": True, "deterministic": False},
}


def training_spec(args, scratch: Path, arch: str, width: float, **extra) -> dict:
    """A training worker's spec: one HeUni cell on the synthetic training set."""
    return {
        "arch": arch,
        "init": "HeUni",
        "seed": 0,
        "width": width,
        "data": synthetic_file(scratch, args.train_images, max(10, args.train_images // 5)),
        "epochs": args.train_epochs,
        "threads": args.threads,
        **extra,
    }


def bench_training(args, rows: Rows, scratch: Path) -> None:
    archs = args.archs
    widths = args.widths
    float32_ips = {}
    for width in widths:
        for arch in archs:
            spec = training_spec(args, scratch, arch, width)
            log(
                f"training: train_cell, then a bare keras fit, {arch} width {width} "
                f"({args.train_images} images)"
            )
            pair = run_worker("train_pair", spec)
            bare, project = pair["bare"], pair["project"]
            n = args.train_images
            key = f"{arch}.w{width:g}"
            bare_ips = n / bare["warm_epoch_s"]
            project_ips = n / project["warm_epoch_total_s"]
            float32_ips[key] = project_ips
            ratio = project_ips / bare_ips
            rows.add(
                "training",
                f"{key}.bare_fit",
                bare_ips,
                "images/s",
                detail=f"warm epoch {bare['warm_epoch_s']:.2f} s incl. validation "
                f"(first epoch {bare['first_epoch_s']:.2f} s)",
            )
            rows.add(
                "training",
                f"{key}.train_cell",
                project_ips,
                "images/s",
                ratio=ratio,
                target=f"ratio >= {TARGET_TRAIN_RATIO}",
                met=ratio >= TARGET_TRAIN_RATIO,
                detail=f"warm epoch {project['warm_epoch_total_s']:.2f} s all-in "
                f"(first epoch {project['first_epoch_end_s']:.2f} s, whole call "
                f"{project['total_s']:.2f} s)",
            )
            fit_ips = n / project["warm_fit_s"]
            rows.add(
                "training",
                f"{key}.train_cell_fit_only",
                fit_ips,
                "images/s",
                ratio=fit_ips / bare_ips,
                detail="history 'seconds': fit + validation, no dynamics/checkpoint",
            )
            rest = project["warm_epoch_total_s"] - project["warm_fit_s"]
            rest -= project["warm_dynamics_s"]
            # The paper's epoch: 50,000 training and 10,000 test images, the same 5:1 as here;
            # per-image times scale, dynamics and checkpoint cost the same per epoch.
            per_epoch = project["warm_dynamics_s"] + max(rest, 0.0)
            projected = (PAPER_TRAIN_IMAGES / bare_ips) / (PAPER_TRAIN_IMAGES / fit_ips + per_epoch)
            rows.add(
                "training",
                f"{key}.train_cell_projected_50k",
                projected,
                "ratio",
                ratio=projected,
                target=f"ratio >= {TARGET_TRAIN_RATIO}",
                met=projected >= TARGET_TRAIN_RATIO,
                detail="train_cell / bare on a 50,000-image epoch: fit_only images/s and "
                "bare images/s scaled, plus the measured dynamics + checkpoint seconds",
            )
            rows.add(
                "training",
                f"{key}.dynamics_per_epoch",
                project["warm_dynamics_s"],
                "s",
                ratio=project["warm_dynamics_s"] / project["warm_epoch_total_s"],
                detail="LayerDynamics on 256 probe images; ratio = share of epoch",
            )
            rows.add(
                "training",
                f"{key}.checkpoint_per_epoch",
                max(rest, 1e-6),
                "s",
                ratio=rest / project["warm_epoch_total_s"],
                detail="epoch total - fit - dynamics: checkpoint .keras save, "
                "progress.json, cleanup; ratio = share of epoch",
            )
            rows.add(
                "memory",
                f"training.{key}.bare_fit.peak_rss",
                bare["peak_rss_mb"],
                "MB",
                detail="worker process ru_maxrss after train_cell and the bare fit: an upper bound",
            )
            rows.add(
                "memory",
                f"training.{key}.train_cell.peak_rss",
                project["peak_rss_mb"],
                "MB",
                detail="worker process ru_maxrss after train_cell",
            )
            log(
                f"  bare {bare_ips:.0f} img/s, train_cell {project_ips:.0f} img/s "
                f"(ratio {ratio:.3f}); dynamics {project['warm_dynamics_s']:.2f} s, "
                f"checkpoint etc. {rest:.2f} s per epoch"
            )
    bench_switches(args, rows, scratch, float32_ips)


def bench_switches(args, rows: Rows, scratch: Path, float32_ips: dict) -> None:
    """train_cell with each GPU switch against the float32 default, first arch and width."""
    arch, width = args.archs[0], args.widths[0]
    key = f"{arch}.w{width:g}"
    for name in args.switches:
        spec = training_spec(args, scratch, arch, width, training_overrides=SWITCHES[name])
        log(f"training: train_cell with {name} ({SWITCHES[name]}), {arch} width {width}")
        result = run_worker("train_project", spec)
        ips = args.train_images / result["warm_epoch_total_s"]
        rows.add(
            "training",
            f"{key}.train_cell.{name}",
            ips,
            "images/s",
            ratio=ips / float32_ips[key],
            detail=f"training config {SWITCHES[name]}; ratio = / float32 train_cell",
        )
        log(f"  {ips:.0f} img/s, {ips / float32_ips[key]:.2f} x float32")


# --------------------------------------------------------------------------- 2. stages


def snakemake_command(workdir: Path, *args: str, cores: int = 2) -> list[str]:
    return [
        sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE),
        "--directory", str(workdir), "--configfile", str(workdir / "cfg.yaml"),
        "--cores", str(cores), "--workflow-profile", "none", *args,
    ]  # fmt: skip


def run_snakemake(workdir: Path, *args: str, timeout: float = 3600):
    started = time.monotonic()
    proc = subprocess.run(
        snakemake_command(workdir, *args),
        capture_output=True,
        text=True,
        env=worker_env(),
        timeout=timeout,
    )
    return proc, time.monotonic() - started


def cell_config(args) -> dict:
    import yaml

    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    quick = yaml.safe_load((REPO / "config" / "quick.yaml").read_text())
    config = deep_update(base, quick)
    epochs = args.cell_epochs
    overrides = {
        "results_dir": "results",
        "state_dir": "state",
        "data": {
            "source": "synthetic",
            "train_samples": None,
            "test_samples": None,
            "synthetic": {
                "train_samples": args.cell_train,
                "test_samples": args.cell_test,
                "seed": 0,
            },
        },
        "architectures": [args.cell_arch],
        "initializers": [args.cell_init],
        "seeds": [0],
        "training": {
            "epochs": epochs,
            "lr_boundaries": [b for b in quick["training"]["lr_boundaries"] if b < epochs],
            "analyze_epochs": [epochs],
        },
        "calibration": {"num_samples": min(1024, args.cell_train)},
        "sensitivity": {"num_images": min(1000, args.cell_test)},
    }
    return deep_update(config, overrides)


# the scheme the benchmark's cell is analysed in: the default (the paper's quint8)
SCHEME = "quint8"


def cell_targets(args) -> list[str]:
    epoch_dir = f"results/{args.cell_arch}/{args.cell_init}/seed0/epoch{args.cell_epochs}"
    names = ["metrics", "layerwise", "quant_error", "sensitivity"]
    return [f"{epoch_dir}/q/{SCHEME}/{name}.parquet" for name in names]


def snakemake_job_times(workdir: Path) -> dict[str, float]:
    """{rule: end - start} from Snakemake's per-output metadata (.snakemake/metadata)."""
    times: dict[str, float] = {}
    for path in (workdir / ".snakemake" / "metadata").glob("*"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("starttime") and record.get("endtime"):
            times[record["rule"]] = record["endtime"] - record["starttime"]
    return times


def script_imports(stage: str) -> str:
    """Python code importing every module a rule script imports (at any depth)."""
    tree = ast.parse((REPO / "workflow" / "scripts" / f"{stage}.py").read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return "import " + ", ".join(sorted(modules))


def read_benchmark_tsv(path: Path) -> dict:
    import pandas as pd

    frame = pd.read_csv(path, sep="\t")
    return {"s": float(frame["s"].iloc[0]), "max_rss": float(frame["max_rss"].iloc[0])}


def bench_stages(args, rows: Rows, workdir: Path) -> dict:
    import pandas as pd
    import yaml

    python = [sys.executable, "-c"]
    env = worker_env()
    log(f"stages: import costs (median of {args.repeats})")
    imports = {
        "python": median_wall([*python, "pass"], args.repeats, env),
        "tensorflow_keras": median_wall([*python, "import tensorflow, keras"], args.repeats, env),
        "pandas_pyarrow_numpy": median_wall(
            [*python, "import pandas, pyarrow, numpy"], args.repeats, env
        ),
        "snakemake_script": median_wall([*python, "import snakemake.script"], args.repeats, env),
    }
    # Stages without TensorFlow: their own scripts' imports (numpy, pandas, quantinit ...).
    for stage in sorted(set(ALL_STAGES) - TF_STAGES):
        imports[f"{stage}_script"] = median_wall(
            [*python, script_imports(stage)], args.repeats, env
        )
    for name, seconds in imports.items():
        what = "the rule script's imports" if name.endswith("_script") else "'import ...'"
        rows.add(
            "stages",
            f"import.{name}",
            seconds,
            "s",
            detail=f"python -c {what}: wall, median of {args.repeats}",
        )
    log("  " + ", ".join(f"{k} {v:.2f} s" for k, v in imports.items()))

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "cfg.yaml").write_text(yaml.safe_dump(cell_config(args)))
    log(
        f"stages: one cell through the workflow ({args.cell_arch}/{args.cell_init}, "
        f"{args.cell_train}/{args.cell_test} images, {args.cell_epochs} epochs) in {workdir}"
    )
    proc, wall = run_snakemake(workdir, *cell_targets(args))
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    rows.add(
        "stages",
        "workflow_one_cell_total",
        wall,
        "s",
        detail="snakemake wall for prepare_data + train + all per-cell stages",
    )

    cell = workdir / "results" / args.cell_arch / args.cell_init / "seed0"
    epoch_dir = cell / f"epoch{args.cell_epochs}"
    job_times = snakemake_job_times(workdir)
    bench_files = {
        "prepare_data": workdir / "results" / "benchmarks" / "prepare_data.tsv",
        "train": cell / "train" / "benchmark.tsv",
        "build_engine": workdir / "results" / "engines" / "benchmarks" / f"{args.cell_arch}.tsv",
        **{
            s: (epoch_dir if s in SHARED_STAGES else epoch_dir / "q" / SCHEME)
            / "benchmarks"
            / f"{s}.tsv"
            for s in ANALYSIS_STAGES
        },
    }
    stage_wall, stage_work = {}, {}
    for stage in ALL_STAGES:
        path = bench_files[stage]
        if path.exists():
            bench = read_benchmark_tsv(path)
            wall_s, source = bench["s"], "benchmark tsv s"
            if bench["max_rss"] > 0:  # 0 or NA: the job ended before the first sample
                rows.add(
                    "memory",
                    f"stage.{stage}.max_rss",
                    bench["max_rss"],
                    "MB",
                    detail="snakemake benchmark max_rss (sampled: jobs under ~1 s read low)",
                )
        elif stage in job_times:
            wall_s, source = job_times[stage], "no benchmark file: .snakemake metadata end-start"
        else:
            raise RuntimeError(f"no timing for stage {stage} ({path} missing)")
        startup_name = "tensorflow_keras" if stage in TF_STAGES else f"{stage}_script"
        startup = imports[startup_name]
        work = wall_s - startup
        stage_wall[stage], stage_work[stage] = wall_s, work
        rows.add("stages", f"{stage}.wall", wall_s, "s", detail=source)
        rows.add("stages", f"{stage}.startup", startup, "s", detail=f"import.{startup_name}")
        rows.add(
            "stages",
            f"{stage}.work",
            max(work, 1e-3),
            "s",
            detail="wall - startup" + (" (negative: clamped)" if work <= 0 else ""),
        )
        log(f"  {stage:<18} wall {wall_s:6.2f} s  work {work:6.2f} s  ({source})")

    history = pd.read_parquet(cell / "train" / "history.parquet")
    warm = history.iloc[1:] if len(history) > 1 else history
    epoch_s = float(warm["seconds"].mean())
    rows.add(
        "stages",
        "train_epoch",
        epoch_s,
        "s",
        detail=f"mean history 'seconds' of epochs {list(warm.epoch)} (fit + validation; "
        "dynamics and checkpoint excluded)",
    )
    chain_wall = sum(stage_wall[s] for s in ANALYSIS_STAGES)
    chain_work = sum(stage_work[s] for s in ANALYSIS_STAGES)
    rows.add(
        "stages",
        "analysis_chain.wall",
        chain_wall,
        "s",
        ratio=chain_wall / epoch_s,
        target="ratio < 1 (chain < one epoch)",
        met=chain_wall < epoch_s,
        detail="sum of the 7 post-training stages' wall; ratio = / train_epoch",
    )
    rows.add(
        "stages",
        "analysis_chain.work",
        max(chain_work, 1e-3),
        "s",
        ratio=chain_work / epoch_s,
        target="ratio < 1 (chain < one epoch)",
        met=chain_work < epoch_s,
        detail="same, start-up/imports subtracted; ratio = / train_epoch",
    )
    rows.add(
        "stages",
        "analysis_chain.wall_with_engine",
        chain_wall + stage_wall["build_engine"],
        "s",
        detail="the chain plus build_engine, which a study runs once per architecture "
        "(shared by its cells)",
    )
    log(
        f"  epoch {epoch_s:.2f} s; analysis chain wall {chain_wall:.2f} s "
        f"({chain_wall / epoch_s:.2f} epochs), work {chain_work:.2f} s "
        f"({chain_work / epoch_s:.2f} epochs); build_engine {stage_wall['build_engine']:.2f} s "
        "per architecture"
    )
    return {
        "epoch_dir": epoch_dir,
        "dataset": workdir / "results" / "data" / "dataset.npz",
        "engine": workdir / "results" / "engines" / args.cell_arch,
    }


# --------------------------------------------------------------------------- 3. workflow


def bench_workflow(args, rows: Rows, cell_workdir: Path | None, scratch: Path) -> None:
    import yaml

    study = scratch / "study144"
    study.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["seeds"] = [0, 1, 2]
    (study / "cfg.yaml").write_text(yaml.safe_dump(config))
    startup = median_wall(
        [sys.executable, "-m", "snakemake", "--version"], args.repeats, worker_env()
    )
    rows.add(
        "workflow",
        "snakemake_startup",
        startup,
        "s",
        detail=f"python -m snakemake --version, median of {args.repeats}",
    )
    times, counts = [], {}
    for attempt in range(args.repeats):
        proc, wall = run_snakemake(study, "-n", timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"dry run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        counts = planned_jobs(proc.stdout + proc.stderr)
        times.append(wall)
        log(f"workflow: dry run of the 144-cell study {attempt + 1}/{args.repeats}: {wall:.2f} s")
    cells = counts.get("train", 0)
    dry = statistics.median(times)
    rows.add(
        "workflow",
        "dry_run_144_cells",
        dry,
        "s",
        target=f"< {TARGET_DRY_RUN_S:g} s",
        met=dry < TARGET_DRY_RUN_S,
        detail=f"snakemake -n, median of {len(times)}; {cells} train jobs, "
        f"{counts.get('total', sum(counts.values()))} jobs planned",
    )
    rows.add(
        "workflow",
        "dry_run_jobs",
        max(sum(counts.values()), 1),
        "jobs",
        detail=f"{cells} train jobs (cells) in the plan",
    )

    if cell_workdir is None:
        return
    proc, wall = run_snakemake(cell_workdir, *cell_targets(args), timeout=600)
    output = proc.stdout + proc.stderr
    nothing = proc.returncode == 0 and "Nothing to be done" in output
    rows.add(
        "workflow",
        "noop_rerun_one_cell",
        wall,
        "s",
        target=f"< {TARGET_NOOP_S:g} s",
        met=nothing and wall < TARGET_NOOP_S,
        detail="snakemake --cores 2 on the finished cell: "
        + ("reported nothing to be done" if nothing else "DID NOT report nothing to do"),
    )
    log(f"workflow: no-op rerun {wall:.2f} s ({'nothing to be done' if nothing else 'RAN JOBS'})")
    if not nothing:
        print(output[-3000:])


# --------------------------------------------------------------------------- 4. evaluation


def bench_evaluation(args, rows: Rows, cell: dict, scratch: Path) -> None:
    spec = {
        "data": synthetic_file(scratch, 10, args.eval_images, seed=1),
        "epoch_dir": str(cell["epoch_dir"]),
        "dataset": str(cell["dataset"]),
        "engine": str(cell["engine"]),
        "batch_sizes": args.eval_batches,
        "litert_threads": args.litert_threads,
        "calibration": min(1024, args.cell_train),
        "threads": args.threads,
    }
    labels = {"float": "keras_float", "quint8": "engine_quint8", "litert": "litert_int8"}
    results = {}
    for backend, label in labels.items():
        log(f"evaluation: {label} on {args.eval_images} images")
        result = run_worker("evaluate", {**spec, "backend": backend})
        results[backend] = result
        for key, ips in result["throughput"].items():
            rows.add(
                "evaluation",
                f"{label}.{key}",
                ips,
                "images/s",
                detail="b = batch size, t = LiteRT num_threads",
            )
            log(f"  {label}.{key}: {ips:.0f} images/s")
        rows.add(
            "memory",
            f"evaluation.{label}.peak_rss",
            result["peak_rss_mb"],
            "MB",
            detail="worker process ru_maxrss",
        )
    rows.add(
        "evaluation",
        "quint8.calibration",
        results["quint8"]["calibration_s"],
        "s",
        detail=f"calibration.calibrate of {spec['calibration']} images on the engine",
    )
    rows.add(
        "evaluation",
        "quint8.build_network",
        results["quint8"]["build_s"],
        "s",
        detail="engine.QuantizedNetwork: fake-quantized kernels, fake-quant rows",
    )
    rows.add(
        "evaluation",
        "litert.conversion",
        results["litert"]["conversion_s"],
        "s",
        detail=f"convert_full_integer, {spec['calibration']} representative images",
    )


# --------------------------------------------------------------------------- main


def print_table(rows: list[dict]) -> None:
    header = f"{'group':<10} {'name':<52} {'value':>10} {'unit':<9} {'ratio':>7}  target"
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
        target = ""
        if r["target"]:
            target = f"{r['target']}: {'met' if r['target_met'] else 'NOT MET'}"
        value = r["value"]
        shown = f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"
        print(f"{r['group']:<10} {r['name']:<52} {shown:>10} {r['unit']:<9} {ratio:>7}  {target}")


def write_results(out: Path, rows: list[dict], meta: dict) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    frame = pd.DataFrame(rows, columns=list(rows[0]))
    frame["target_met"] = frame["target_met"].astype("boolean")
    frame.to_parquet(out / "results.parquet", index=False)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI, 1-2 minutes)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument(
        "--only",
        default=",".join(GROUPS[:4]),
        help="comma-separated: training,stages,workflow,evaluation (memory rows come with each)",
    )
    parser.add_argument("--archs", nargs="+", choices=ARCHITECTURES)
    parser.add_argument("--widths", nargs="+", type=float)
    parser.add_argument("--train-images", type=int)
    parser.add_argument(
        "--train-epochs",
        type=int,
        help="epochs per training measurement; the first is excluded, the fastest of the "
        "rest taken (default 4; smoke 2)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow intra-op threads in workers (0 = TF default)",
    )
    parser.add_argument(
        "--switches",
        nargs="*",
        choices=list(SWITCHES),
        help="training switches measured against float32 (default: all; smoke: xla)",
    )
    parser.add_argument("--cell-arch", default="DWS_Conv_With_BN", choices=ARCHITECTURES)
    parser.add_argument("--cell-init", default="HeUni")
    parser.add_argument("--cell-train", type=int)
    parser.add_argument("--cell-test", type=int)
    parser.add_argument("--cell-epochs", type=int)
    parser.add_argument("--eval-images", type=int)
    parser.add_argument("--eval-batches", nargs="+", type=int)
    parser.add_argument("--litert-threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, help="repeats of import / dry-run timings")
    parser.add_argument(
        "--workdir", type=Path, help="folder for the one-cell study (default: a temporary one)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    smoke = args.smoke
    defaults = {
        "archs": ARCHITECTURES[:1] if smoke else ARCHITECTURES,
        "widths": [0.25] if smoke else [0.25, 1.0],
        "train_images": 256 if smoke else 2048,
        "train_epochs": 2 if smoke else 4,
        "cell_train": 512 if smoke else 5000,
        "cell_test": 200 if smoke else 1000,
        "cell_epochs": 1 if smoke else 4,
        "eval_images": 500 if smoke else 10000,
        "eval_batches": [128] if smoke else [32, 128, 500],
        "repeats": 1 if smoke else 3,
        "switches": ["xla"] if smoke else list(SWITCHES),
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.train_epochs < 2:
        parser.error("--train-epochs must be >= 2 (the first epoch is excluded)")
    args.only = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(args.only) - set(GROUPS[:4])
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}; allowed {GROUPS[:4]}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        result = WORKERS[args.worker](json.loads(args.spec))
        Path(args.result).write_text(json.dumps(result))
        return 0

    started = time.monotonic()
    load_start = os.getloadavg()
    log(
        f"benchmark ({'smoke' if args.smoke else 'full'}) on {os.cpu_count()} CPUs, "
        f"load average {load_start[0]:.2f}; results to {args.out}"
    )
    rows = Rows()
    scratch = Path(tempfile.mkdtemp(prefix="qi-bench-"))
    try:
        cell_workdir = args.workdir or scratch / "cell"
        if cell_workdir.exists() and any(cell_workdir.iterdir()):
            raise SystemExit(f"--workdir {cell_workdir} is not empty")
        cell = None
        if "training" in args.only:
            bench_training(args, rows, scratch)
        if {"stages", "workflow", "evaluation"} & set(args.only):
            cell = bench_stages(args, rows, cell_workdir)
        if "workflow" in args.only:
            bench_workflow(args, rows, cell_workdir if cell else None, scratch)
        if "evaluation" in args.only:
            bench_evaluation(args, rows, cell, scratch)
    finally:
        if args.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    rows.add(
        "memory",
        "benchmark_driver.peak_rss",
        peak_rss_mb(),
        "MB",
        detail="this driver process (workers are children)",
    )
    load_end = os.getloadavg()
    meta = {
        "mode": "smoke" if args.smoke else "full",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "duration_s": time.monotonic() - started,
        "cpus": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "children_peak_rss_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
    }
    write_results(args.out, rows.rows, meta)
    print()
    print_table(rows.rows)
    print(
        f"\n{len(rows.rows)} measurements in {meta['duration_s']:.0f} s; load average "
        f"{load_start[0]:.2f} -> {load_end[0]:.2f} on {os.cpu_count()} CPUs; "
        f"wrote {args.out / 'results.parquet'} and results.json"
    )
    return 0


if __name__ == "__main__":
    # Keep workers' TensorFlow C++ chatter out of the output; allow `python benchmarks/run.py`.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
