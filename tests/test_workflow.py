"""End to end: the real Snakemake workflow on a tiny synthetic study."""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from quantinit.cellfiles import arrow_schema
from quantinit.claims import VERDICTS
from quantinit.tflite import tflite_tensor_details
from quantinit.workflow_tools import deep_update, planned_jobs

from conftest import REPO
from workflow_helpers import (
    TINY,
    snakemake,
    snakemake_command,
    write_config,
)

pytestmark = pytest.mark.slow

ARCHS = ["Regular_Conv_With_BN", "Regular_Conv_No_BN", "DWS_Conv_With_BN", "DWS_Conv_No_BN"]


DIVERGING = "results/Regular_Conv_No_BN/RandNorm_Large/seed0/epoch1"
# its analysis in the default scheme, the paper's quint8
DIVERGING_Q = f"{DIVERGING}/q/quint8"
FIXTURE_SETTINGS = {"RandNorm_Large": {"stddev": 20.0}}
# the study and the diverging cell, which is not in the configured lists (so not in `all`)
EVERYTHING = ["all"] + [
    f"{DIVERGING_Q}/{name}.parquet" for name in ("metrics", "layerwise", "sensitivity")
]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The 4 architectures with HeUni, and one cell made to diverge (RandNorm std 20)."""
    workdir = tmp_path_factory.mktemp("tiny")
    write_config(workdir, initializer_settings=FIXTURE_SETTINGS)
    result = snakemake(workdir, *EVERYTHING)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return workdir


def epoch_dir(workdir, arch, init="HeUni"):
    return workdir / "results" / arch / init / "seed0" / "epoch1"


def cell_dir(workdir, arch, init="HeUni", scheme="quint8"):
    """A cell's analysis in one quantization scheme."""
    return epoch_dir(workdir, arch, init) / "q" / scheme


TABLES = [
    "calibration", "quantization", "metrics", "predictions", "layerwise", "quant_error",
    "sensitivity",
]  # fmt: skip


@pytest.mark.parametrize("table", TABLES)
def test_every_table_conforms_to_its_schema(tiny_study, table):
    for arch in ARCHS:
        stored = pq.read_table(cell_dir(tiny_study, arch) / f"{table}.parquet")
        assert stored.schema.equals(arrow_schema(table), check_metadata=False), arch
    diverged = pq.read_table(tiny_study / DIVERGING_Q / f"{table}.parquet")
    assert diverged.schema.equals(arrow_schema(table), check_metadata=False)


def test_predictions_are_what_the_metrics_average(tiny_study):
    for arch in ("DWS_Conv_With_BN", "Regular_Conv_No_BN"):
        cell = cell_dir(tiny_study, arch)
        metrics = pd.read_parquet(cell / "metrics.parquet").iloc[0]
        predictions = pd.read_parquet(cell / "predictions.parquet")
        assert len(predictions) == TINY["data"]["synthetic"]["test_samples"]
        assert 100 * predictions.fp32_correct.mean() == pytest.approx(metrics.fp32_accuracy)
        assert 100 * predictions.tflite_correct.mean() == pytest.approx(
            metrics.tflite_int8_accuracy
        )
        assert predictions.squared_error.mean() == pytest.approx(metrics.qmse, rel=1e-6)
        assert metrics.fp32_accuracy_lo <= metrics.fp32_accuracy <= metrics.fp32_accuracy_hi
        assert metrics.quint8_minus_fp32_lo <= metrics.quint8_minus_fp32
        assert metrics.quint8_minus_fp32 <= metrics.quint8_minus_fp32_hi


def test_metrics_of_trained_cells(tiny_study):
    for arch in ARCHS:
        metrics = pd.read_parquet(cell_dir(tiny_study, arch) / "metrics.parquet").iloc[0]
        history = pd.read_parquet(epoch_dir(tiny_study, arch).parent / "train/history.parquet")
        # the same model on the same test images as training's last validation
        assert metrics.fp32_accuracy == pytest.approx(100 * history.val_accuracy.iloc[-1])
        assert 0 <= metrics.quint8_accuracy <= 100 and 0 <= metrics.tflite_int8_accuracy <= 100
        assert metrics.qmse >= 0 and metrics.qce >= 0
        assert metrics.status in {"ok", "not_learning"} and metrics.arch == arch


def test_diverged_cell_yields_rows_marked_diverged(tiny_study):
    status = json.loads((tiny_study / DIVERGING / "cell.json").read_text())["status"]
    assert status == "diverged"
    metrics = pd.read_parquet(tiny_study / DIVERGING_Q / "metrics.parquet")
    assert list(metrics.status) == ["diverged"] and metrics.fp32_accuracy.isna().all()
    assert list(metrics.scheme) == ["quint8"]
    layerwise = pd.read_parquet(tiny_study / DIVERGING_Q / "layerwise.parquet")
    assert len(layerwise) == 9 and set(layerwise.status) == {"diverged"}
    assert layerwise.layer.iloc[0] == "conv1" and layerwise.weight_range.isna().all()


def test_layerwise_joins_calibration_and_dynamics(tiny_study):
    cell = cell_dir(tiny_study, "DWS_Conv_With_BN")
    layerwise = pd.read_parquet(cell / "layerwise.parquet")
    calibration = pd.read_parquet(cell / "calibration.parquet").set_index("tensor")
    assert list(layerwise.kind[:3]) == ["conv", "depthwise", "pointwise"]
    for row in layerwise.itertuples():
        assert row.activation_range == calibration.loc[row.activation, "clipped_range"]
    assert calibration.index[0] == "rescale" and len(calibration) == len(layerwise) + 1
    dynamics = pd.read_parquet(
        epoch_dir(tiny_study, "DWS_Conv_With_BN").parent / "train/dynamics.parquet"
    )
    assert sorted(dynamics.epoch.unique()) == [0, 1]
    assert list(dynamics[dynamics.epoch == 1].layer) == list(layerwise.layer)


def test_every_cell_trained_and_exported(tiny_study):
    import keras

    for arch in ARCHS:
        cell = tiny_study / "results" / arch / "HeUni" / "seed0"
        history = pd.read_parquet(cell / "train" / "history.parquet")
        assert list(history["epoch"]) == [1]
        assert history["val_accuracy"].notna().all()
        status = json.loads((cell / "train" / "status.json").read_text())
        assert status["status"] in {"ok", "not_learning"}
        assert status["epochs_completed"] == 1
        exported = json.loads((cell / "epoch1" / "cell.json").read_text())
        assert exported == {**exported, "arch": arch, "init": "HeUni", "epoch": 1}
        model = keras.models.load_model(cell / "epoch1" / "model.keras")
        assert model.output_shape == (None, 10)
        assert "epoch 1/1" in (cell / "train" / "train.log").read_text()
    metadata = json.loads((tiny_study / "results" / "data" / "dataset.json").read_text())
    assert metadata["source"] == "synthetic" and len(metadata["checksum"]) == 64


def test_at_least_one_cell_learns_in_one_epoch(tiny_study):
    accuracies = [
        pd.read_parquet(tiny_study / f"results/{a}/HeUni/seed0/train/history.parquet")[
            "val_accuracy"
        ].iloc[-1]
        for a in ARCHS
    ]
    assert max(accuracies) > 0.25, accuracies


def test_study_tables_and_figures(tiny_study):
    study = tiny_study / "results" / "study"
    table = pd.read_parquet(study / "table2.parquet").set_index("Network")
    assert set(table.index) == {f"{arch}_HeUni" for arch in ARCHS}  # the diverged cell: not
    for arch in ARCHS:  # configured, so not in the study's table
        metrics = pd.read_parquet(cell_dir(tiny_study, arch) / "metrics.parquet").iloc[0]
        row = table.loc[f"{arch}_HeUni"]
        assert row["QUINT8 Accuracy"] == pytest.approx(metrics.quint8_accuracy)
        assert row["QCE"] == pytest.approx(metrics.qce) and row["Status"] == metrics.status
        if metrics.status != "diverged":  # one seed: the cell's bootstrap interval
            assert row["FP32 Accuracy lo"] == metrics.fp32_accuracy_lo
            assert row["QUINT8 - FP32 hi"] == metrics.quint8_minus_fp32_hi
    assert "| Network | FP32 Accuracy |" in (study / "table2.md").read_text()
    claims = pd.read_parquet(study / "claims.parquet")
    assert len(claims) == 6 and set(claims.verdict) <= set(VERDICTS)
    assert (study / "claims.md").read_text().count("\n- **") == 6
    comparison = pd.read_csv(study / "comparison.csv")
    assert len(comparison) == 33 + 1  # the paper's rows and DWS_Conv_No_BN_HeUni (not in it)
    split = pd.read_csv(study / "quantization_split.csv").set_index("Network")
    for arch in ARCHS:
        metrics = pd.read_parquet(cell_dir(tiny_study, arch) / "metrics.parquet").iloc[0]
        row = split.loc[f"{arch}_HeUni"]
        pairs = {"weight_only_accuracy": "W-only Accuracy", "activation_only_qce": "A-only QCE"}
        for column, title in pairs.items():
            assert row[title] == pytest.approx(metrics[column], nan_ok=True)
    assert "| W-only Accuracy | A-only Accuracy |" in (study / "quantization_split.md").read_text()
    for name in ("figure2_vanishing_act", "figure3_layerwise", "degradation_heatmap",
                 "accuracy_vs_epoch", "dynamics_DWS_Conv_With_BN_HeUni",
                 "sensitivity_DWS_Conv_With_BN_HeUni"):  # fmt: skip
        assert (study / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (study / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"


def test_schemes_table_holds_every_cell_of_the_scheme(tiny_study):
    study = tiny_study / "results" / "study"
    table = pd.read_csv(study / "schemes.csv")
    assert set(table.Scheme) == {"quint8"} and len(table) == len(ARCHS)
    assert set(table.Settings) == {"8-bit per-tensor asymmetric, 1% clipping"}
    for _, row in table.iterrows():
        metrics = pd.read_parquet(cell_dir(tiny_study, row.arch) / "metrics.parquet").iloc[0]
        assert row["Quantized Accuracy"] == pytest.approx(metrics.quint8_accuracy)
        assert row["Percent Accuracy Decrease hi"] == pytest.approx(
            metrics.percent_accuracy_decrease_hi, nan_ok=True
        )
    assert "## quint8: 8-bit per-tensor asymmetric" in (study / "schemes.md").read_text()
    assert (study / "figures" / "schemes.png").stat().st_size > 10_000
    collected = pd.read_parquet(study / "schemes" / "metrics.parquet")
    assert list(collected.scheme) == ["quint8"] * len(ARCHS)


def test_quant_error_and_sensitivity_join_layerwise(tiny_study):
    cell = cell_dir(tiny_study, "DWS_Conv_With_BN")
    layerwise = pd.read_parquet(cell / "layerwise.parquet")
    errors = pd.read_parquet(cell / "quant_error.parquet")
    sensitivity = pd.read_parquet(cell / "sensitivity.parquet")
    assert list(errors.layer) == list(layerwise.layer) == list(sensitivity.layer)
    assert (errors.num_images == 100).all() and (errors.rmse_over_scale >= 0).all()
    # the deployed int8 model, layer by layer, beside the simulated one
    assert errors.tflite_error.isna().all()
    assert (errors.tflite_vs_simulated_sqnr_db > 0).all() and errors.tflite_sqnr_db.notna().all()
    assert (errors.sqnr_local_db > 0).all()
    metrics = pd.read_parquet(cell / "metrics.parquet").iloc[0]
    assert sorted(sensitivity["rank"]) == list(range(1, len(sensitivity) + 1))
    # on its 100 images, the fully quantized model's accuracy is a multiple of 1%
    assert (sensitivity.quint8_accuracy % 1 == 0).all() and 0 <= metrics.qce
    summary = json.loads((cell / "sensitivity_summary.json").read_text())
    first = sensitivity.set_index("rank").loc[1]
    assert summary["most_sensitive"][0]["layer"] == first.layer
    most = pd.read_csv(tiny_study / "results/study/most_sensitive.csv").set_index("Network")
    assert most.loc["DWS_Conv_With_BN_HeUni", "Most sensitive layer"] == first.layer
    diverged = pd.read_parquet(tiny_study / DIVERGING_Q / "sensitivity.parquet")
    assert set(diverged.status) == {"diverged"} and diverged.only_accuracy.isna().all()


def test_report_gathers_tables_and_figures(tiny_study):
    result = snakemake(tiny_study, "--report", "report.html")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = (tiny_study / "report.html").read_text(errors="replace")
    for name in (
        "table2.csv",
        "comparison.csv",
        "quantization_split.csv",
        "figure2_vanishing_act.png",
        "figure3_layerwise.png",
    ):
        assert name in html


def test_finished_study_has_nothing_to_do(tiny_study):
    result = snakemake(tiny_study, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_one_initializer_setting_reruns_only_its_cells(tiny_study):
    targets = ("all", f"{DIVERGING_Q}/metrics.parquet")
    write_config(tiny_study, initializer_settings={"RandNorm_Large": {"stddev": 4.0}})
    jobs = planned_jobs(snakemake(tiny_study, "-n", *targets).stdout)
    assert jobs["train"] == 1 and jobs["evaluate"] == 1  # the RandNorm_Large cell, no HeUni one
    write_config(
        tiny_study,
        initializer_settings={"RandNorm_Large": {"stddev": 20.0}, "RandUni_Small": {"limit": 0.2}},
    )
    result = snakemake(tiny_study, "-n", *targets)
    assert "Nothing to be done" in result.stdout + result.stderr
    write_config(tiny_study, initializer_settings=FIXTURE_SETTINGS)


def test_touching_the_data_file_reruns_every_cell(tiny_study):
    dataset = tiny_study / "results/data/dataset.npz"
    os.utime(dataset)  # newer than every output that depends on it
    jobs = planned_jobs(snakemake(tiny_study, "-n").stdout)
    assert "prepare_data" not in jobs  # the data file itself is not remade
    assert jobs["train"] == 4 and jobs["evaluate"] == 4 and jobs["table2"] == 1
    # after `--touch` (outputs marked up to date, nothing recomputed) nothing is left to do
    assert snakemake(tiny_study, "--touch", *EVERYTHING).returncode == 0
    assert "Nothing to be done" in snakemake(tiny_study, "-n").stdout


def test_deleting_one_intermediate_reruns_only_what_depends_on_it(tiny_study):
    relative = "results/DWS_Conv_With_BN/HeUni/seed0/epoch1/q/quint8/calibration.parquet"
    calibration = tiny_study / relative
    kept = calibration.read_bytes()
    calibration.unlink()
    try:
        # Snakemake 9 leaves a missing intermediate alone while what depends on it is
        # present and up to date (README: "Rerunning part of a study") ...
        assert "Nothing to be done" in snakemake(tiny_study, "-n").stdout
        # ... and --forcerun on the file remakes it and exactly what depends on it
        jobs = planned_jobs(snakemake(tiny_study, "-n", "--forcerun", relative).stdout)
    finally:
        calibration.write_bytes(kept)
        # its mtime is new now
        assert snakemake(tiny_study, "--touch", *EVERYTHING).returncode == 0
    per_cell = {"calibrate", "quantize", "evaluate", "layerwise", "quant_sensitivity"}
    assert {rule: jobs[rule] for rule in per_cell if rule in jobs} == dict.fromkeys(per_cell, 1)
    assert not {"prepare_data", "train", "export_checkpoint", "fold_bn"} & set(jobs)
    assert jobs["table2"] == 1  # and the study's tables and figures that read this cell
    assert "Nothing to be done" in snakemake(tiny_study, "-n").stdout


def test_single_cell_target_runs_only_that_cell(tiny_study):
    target = "results/DWS_Conv_With_BN/GlorotUni/seed0/epoch1/q/quint8/metrics.parquet"
    jobs = planned_jobs(snakemake(tiny_study, "-n", target).stdout)
    chain = ["train", "export_checkpoint", "fold_bn", "calibrate", "quantize", "evaluate"]
    assert jobs == dict.fromkeys(chain, 1)


def test_first_epoch_divergence_exports_the_initial_weights(tiny_study):
    import keras

    cell = json.loads((tiny_study / DIVERGING / "cell.json").read_text())
    assert cell["status"] == "diverged" and cell["exported_epoch"] == 0
    model = keras.models.load_model(tiny_study / DIVERGING / "model.keras")
    assert all(np.isfinite(w).all() for w in model.get_weights())
    # the weights at initialization, as training's dynamics recorded them before epoch 1
    dynamics = pd.read_parquet(tiny_study / DIVERGING / "../train/dynamics.parquet")
    for row in dynamics[dynamics.epoch == 0].itertuples():
        kernel = model.get_layer(row.layer).get_weights()[0]
        assert (kernel.min(), kernel.max()) == (row.weight_min, row.weight_max), row.layer


def test_finished_cells_keep_no_training_state(tiny_study):
    cells = list((tiny_study / "state").glob("*/*/seed0"))
    assert len(cells) == 5
    assert not list((tiny_study / "state").rglob("progress.json"))
    assert not list((tiny_study / "state").rglob("*.keras"))


def test_calibration_settings_rerun_the_analysis_not_training(tiny_study):
    targets = EVERYTHING
    try:
        write_config(
            tiny_study,
            initializer_settings=FIXTURE_SETTINGS,
            quantization={"schemes": [{"name": "quint8", "percentile": 2.0}]},
        )
        jobs = planned_jobs(snakemake(tiny_study, "-n", *targets).stdout)
        assert not {"train", "export_checkpoint", "fold_bn"} & set(jobs)
        assert jobs["calibrate"] == 5
        # the percentile of the dynamics recorded in training is training's own key
        write_config(
            tiny_study, initializer_settings=FIXTURE_SETTINGS, dynamics={"percentile": 2.0}
        )
        jobs = planned_jobs(snakemake(tiny_study, "-n", *targets).stdout)
        assert jobs["train"] == 5
    finally:
        write_config(tiny_study, initializer_settings=FIXTURE_SETTINGS)
    assert "Nothing to be done" in snakemake(tiny_study, "-n", *targets).stdout


def copy_workflow(destination):
    """The workflow and its library in `destination`, file times kept."""
    for part in ("Snakefile", "workflow", "src", "config", "reference", "profiles"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(
                source, destination / part, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(source, destination / part)
    return destination / "Snakefile"


def test_a_library_change_reruns_the_stages_that_run_it(tiny_study, tmp_path):
    """sensitivity.py is imported by quant_sensitivity alone: only it and what reads its
    outputs rerun; a docstring edit reruns nothing."""
    snakefile = copy_workflow(tmp_path)
    targets = EVERYTHING

    def planned():
        result = snakemake(tiny_study, "-n", *targets, snakefile=snakefile)
        assert result.returncode == 0, result.stderr[-3000:]
        return planned_jobs(result.stdout)

    baseline = planned()  # what moving the workflow alone changes (its reference table's path)
    module = tmp_path / "src/quantinit/sensitivity.py"
    source = module.read_text()
    docstring_end = source.index('"""', 3) + 3
    module.write_text(source[:docstring_end] + "\n# reworded" + source[docstring_end:])
    assert planned() == baseline
    module.write_text(source + "\nUNUSED_CONSTANT = 1\n")
    changed = planned()
    added = {rule: n - baseline.get(rule, 0) for rule, n in changed.items()}
    added = {rule: n for rule, n in added.items() if n}
    assert added.pop("quant_sensitivity") == 5
    assert not {"train", "export_checkpoint", "fold_bn", "calibrate", "quantize", "evaluate",
                "layerwise", "prepare_data"} & set(added)  # fmt: skip
    # what reads quant_sensitivity's outputs, and nothing else (collect_schemes gathers
    # every scheme's quant_error and sensitivity tables; the schemes table reads metrics)
    assert set(added) - {"all"} == {
        "collect_sensitivity", "most_sensitive", "sensitivity_figure", "collect_schemes",
    }  # fmt: skip
    assert added["collect_schemes"] == 2


def test_forced_training_rerun_trains_from_scratch(tiny_study):
    train = "results/DWS_Conv_With_BN/HeUni/seed0/train"
    before = pd.read_parquet(tiny_study / train / "history.parquet")
    result = snakemake(
        tiny_study, "--forcerun", f"{train}/history.parquet", f"{train}/history.parquet"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (tiny_study / train / "train.log").read_text().split("cell DWS_Conv_With_BN")[-1]
    assert "starting training" in log and "resuming" not in log
    after = pd.read_parquet(tiny_study / train / "history.parquet")
    assert list(after.loss) == list(before.loss)  # deterministic: the same training again
    assert snakemake(tiny_study, "--touch", *EVERYTHING).returncode == 0  # the rest is up to date


def progress_file(cell_state):
    """The progress.json of the one training configuration under a cell's state folder."""
    found = list(cell_state.glob("*/progress.json"))
    assert len(found) <= 1, found
    return found[0] if found else None


def epochs_saved(cell_state):
    progress = progress_file(cell_state)
    return json.loads(progress.read_text())["epochs_completed"] if progress else 0


def start_and_wait_for_epochs(workdir, cell_state, epochs, *targets):
    """Start Snakemake in its own process group; return once `epochs` epochs are saved."""
    process = subprocess.Popen(
        snakemake_command(workdir, *targets, cores=1),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if epochs_saved(cell_state) >= epochs:
            break
        time.sleep(0.2)
    assert process.poll() is None, "training finished before it could be stopped"
    return process


def test_killed_training_resumes_where_it_stopped(tmp_path):
    write_config(
        tmp_path,
        architectures=["Regular_Conv_With_BN"],
        data={"synthetic": {"train_samples": 1500}},
        training={"epochs": 8},
    )
    cell_state = tmp_path / "state/Regular_Conv_With_BN/HeUni/seed0"
    process = start_and_wait_for_epochs(tmp_path, cell_state, 2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = epochs_saved(cell_state)
    assert 2 <= killed_at < 8

    cell = tmp_path / "results/Regular_Conv_With_BN/HeUni/seed0"
    assert not (cell / "train/history.parquet").exists()
    # what a user does after a hard kill (README: "Resuming a killed run")
    assert snakemake(tmp_path, "--unlock", cores=1).returncode == 0
    result = snakemake(tmp_path, "--rerun-incomplete", cores=1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (cell / "train/train.log").read_text()
    assert f"resuming from epoch{killed_at}.keras after epoch {killed_at} of 8" in log
    history = pd.read_parquet(cell / "train/history.parquet")
    assert list(history["epoch"]) == list(range(1, 9))
    assert progress_file(cell_state) is None  # the finished cell's state is removed


def test_sigterm_saves_state_and_the_rerun_equals_an_uninterrupted_run(tmp_path):
    """SLURM's time limit (--signal=TERM@...): every process of the job gets SIGTERM."""
    settings = dict(
        architectures=["Regular_Conv_With_BN"],
        data={"synthetic": {"train_samples": 1500}},
        training={"epochs": 6},
    )
    train_dir = "results/Regular_Conv_With_BN/HeUni/seed0/train"
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for workdir in (straight, stopped):
        workdir.mkdir()
        write_config(workdir, **settings)
    cell_state = stopped / "state/Regular_Conv_With_BN/HeUni/seed0"
    process = start_and_wait_for_epochs(stopped, cell_state, 2, f"{train_dir}/history.parquet")
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    stopped_at = epochs_saved(cell_state)
    assert 2 <= stopped_at < 6
    log = (stopped / train_dir / "train.log").read_text()
    assert f"stopped by SIGTERM: the state after epoch {stopped_at} of 6 is saved" in log
    assert not (stopped / train_dir / "history.parquet").exists()

    # a new run (or Snakemake's retry) resumes after the saved epoch
    for workdir in (stopped, straight):
        result = snakemake(workdir, f"{train_dir}/history.parquet", cores=1)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (stopped / train_dir / "train.log").read_text()
    assert f"resuming from epoch{stopped_at}.keras after epoch {stopped_at} of 6" in log
    for table in ("history", "dynamics"):
        resumed = pd.read_parquet(stopped / train_dir / f"{table}.parquet")
        uninterrupted = pd.read_parquet(straight / train_dir / f"{table}.parquet")
        compared = [c for c in resumed.columns if "seconds" not in c]
        pd.testing.assert_frame_equal(resumed[compared], uninterrupted[compared])
    assert list(resumed["epoch"].unique()) == list(range(7))  # dynamics: epochs 0..6


TWO_CONFIGS = dict(
    architectures=["Regular_Conv_With_BN"],
    data={"synthetic": {"train_samples": 1500}},
    training={"epochs": 6},
    sensitivity={"enabled": False},
)


def test_two_configurations_sharing_a_state_dir_keep_their_own_training(tmp_path):
    """Issue 12: run A and run B (another results_dir and width, the same state/) at the
    same time; each must be its own configuration's training, as run alone."""
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    for workdir in (shared, alone):
        workdir.mkdir()
        write_config(workdir, "a.yaml", results_dir="results_a", **TWO_CONFIGS)
    wide = deep_update(TWO_CONFIGS, {"model": {"width_multiplier": 0.25}})
    write_config(shared, "b.yaml", results_dir="results_b", **wide)
    train = "Regular_Conv_With_BN/HeUni/seed0/train"
    runs = [
        subprocess.Popen(
            snakemake_command(
                shared, f"results_{name}/{train}/history.parquet", cores=1, config=f"{name}.yaml"
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for name in ("a", "b")
    ]
    solo = snakemake(alone, f"results_a/{train}/history.parquet", cores=1, config="a.yaml")
    for run in runs:
        output, _ = run.communicate(timeout=900)
        assert run.returncode == 0, output[-3000:]
    assert solo.returncode == 0, solo.stdout[-3000:] + solo.stderr[-3000:]

    folders = set()
    for name in ("a", "b"):
        log = (shared / f"results_{name}" / train / "train.log").read_text()
        assert "resuming" not in log and "another configuration" not in log
        folders.add(re.search(r"training state: (\S+)", log).group(1))
    assert len(folders) == 2  # one state folder per configuration
    a, a_alone = (
        pd.read_parquet(d / f"results_a/{train}/history.parquet") for d in (shared, alone)
    )
    assert list(a.loss) == list(a_alone.loss)  # bit for bit what A gives alone
    b = pd.read_parquet(shared / f"results_b/{train}/history.parquet")
    assert list(b.loss) != list(a.loss)


def test_one_training_state_is_used_by_one_job_at_a_time(tmp_path):
    """The same configuration trained by two runs (two results_dirs, one state_dir): the
    second fails at once with a clear message while the first holds the state."""
    long = deep_update(TWO_CONFIGS, {"training": {"epochs": 200}})
    write_config(tmp_path, "a.yaml", results_dir="results_a", **long)
    write_config(tmp_path, "b.yaml", results_dir="results_b", **long)
    train = "Regular_Conv_With_BN/HeUni/seed0/train"
    cell_state = tmp_path / "state/Regular_Conv_With_BN/HeUni/seed0"
    first = subprocess.Popen(
        snakemake_command(tmp_path, f"results_a/{train}/history.parquet", cores=1,
                          config="a.yaml"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while epochs_saved(cell_state) < 1 and time.monotonic() < deadline:
            assert first.poll() is None, "the first run ended"
            time.sleep(0.2)
        second = snakemake(tmp_path, f"results_b/{train}/history.parquet", cores=1,
                           config="b.yaml")  # fmt: skip
        assert first.poll() is None  # still training
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert second.returncode != 0
    log = (tmp_path / f"results_b/{train}/train.log").read_text()
    assert "is in use by pid" in log and "another state_dir" in log
    assert not (tmp_path / f"results_b/{train}/history.parquet").exists()


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_image_folder_without_exactly_the_ten_classes_stops_before_training(tmp_path, change):
    """Issue 12: a folder with 9 classes trained 'ok' on shifted labels; an 11th class
    failed inside TensorFlow. prepare_data must refuse both, naming the folders."""
    from PIL import Image

    from quantinit.data import CLASS_NAMES

    classes = list(CLASS_NAMES[:-1]) if change == "missing" else [*CLASS_NAMES, "zebra"]
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            (tmp_path / "images" / split / name).mkdir(parents=True)
            for index in range(2):
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(image).save(tmp_path / "images" / split / name / f"{index}.png")
    write_config(
        tmp_path,
        data={"source": "image_folder", "image_folder": str(tmp_path / "images")},
        calibration={"num_samples": 10},
        dynamics={"probe_samples": 10},
    )
    result = snakemake(tmp_path, "results/Regular_Conv_With_BN/HeUni/seed0/train/status.json")
    assert result.returncode != 0
    expected = "lacks ['truck']" if change == "missing" else "has extra ['zebra']"
    assert expected in (tmp_path / "results/logs/prepare_data.log").read_text()
    assert expected in result.stdout + result.stderr  # on the console, not only in the log
    assert not (tmp_path / "results/data/dataset.npz").exists()
    assert not (tmp_path / "results/Regular_Conv_With_BN").exists()


# a second scheme: 8-bit per-channel symmetric weights, activations from the plain min/max
PER_CHANNEL = {
    "name": "int8_per_channel",
    "granularity": "per_channel",
    "symmetric": True,
    "calibration": "minmax",
}


def test_adding_a_scheme_runs_only_its_analysis(tiny_study):
    """Over the finished study: the new scheme's per-cell jobs and what gathers every scheme
    run; training, export, folding and every quint8 file and study table are left alone."""
    results = tiny_study / "results"
    kept = {
        path: path.stat().st_mtime_ns
        for path in [*results.rglob("q/quint8/*"), *(results / "study").glob("table2.*")]
    }
    two = {"schemes": [{"name": "quint8"}, PER_CHANNEL]}
    write_config(tiny_study, initializer_settings=FIXTURE_SETTINGS, quantization=two)
    try:
        jobs = planned_jobs(snakemake(tiny_study, "-n", *EVERYTHING).stdout)
        per_scheme = ["calibrate", "quantize", "evaluate", "layerwise", "quant_sensitivity"]
        # collect_schemes: one job per table (metrics, layerwise, quant_error, sensitivity)
        assert jobs == {**dict.fromkeys(per_scheme, 4), "collect_schemes": 4, "schemes": 1,
                        "all": 1}  # fmt: skip
        result = snakemake(tiny_study, *EVERYTHING)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert {path: path.stat().st_mtime_ns for path in kept} == kept

        cell = cell_dir(tiny_study, "DWS_Conv_With_BN", scheme=PER_CHANNEL["name"])
        calibration = pd.read_parquet(cell / "calibration.parquet")
        assert (calibration.percentile == 0).all()  # min/max: nothing clipped
        assert calibration.clip_lo.tolist() == calibration["min"].tolist()
        assert calibration.clip_hi.tolist() == calibration["max"].tolist()
        weights = pd.read_parquet(cell / "quantization.parquet").query("role == 'weight'")
        assert weights.narrow_range.all() and all(len(q) > 1 for q in weights.qmin)
        for scheme in ("quint8", PER_CHANNEL["name"]):
            metrics = pd.read_parquet(cell_dir(tiny_study, "DWS_Conv_With_BN", scheme=scheme)
                                      / "metrics.parquet").iloc[0]  # fmt: skip
            assert metrics.scheme == scheme and pd.isna(metrics.tflite_error)
        # the deployed model has the scheme's granularity: one scale per output channel
        details = tflite_tensor_details((cell / "model_int8.tflite").read_bytes())
        convs = [d for d in details if d["role"] == "weight" and d["op"] == "CONV_2D"]
        assert convs and all(len(d["scales"]) > 1 for d in convs)

        table = pd.read_csv(results / "study" / "schemes.csv")
        assert list(dict.fromkeys(table.Scheme)) == ["quint8", PER_CHANNEL["name"]]
        fp32 = table.pivot(index="Network", columns="Scheme", values="FP32 Accuracy")
        assert (fp32["quint8"] == fp32[PER_CHANNEL["name"]]).all()  # the same trained models
        assert (
            "| DWS_Conv_With_BN | int8_per_channel | quint8 |"
            in (results / "study" / "schemes.md").read_text()
        )
    finally:
        write_config(tiny_study, initializer_settings=FIXTURE_SETTINGS)
    # back to one scheme: only what gathers every scheme reruns
    jobs = planned_jobs(snakemake(tiny_study, "-n", *EVERYTHING).stdout)
    assert jobs == {"collect_schemes": 4, "schemes": 1, "all": 1}
    assert snakemake(tiny_study, *EVERYTHING).returncode == 0


ADAM = {"name": "adam_1e-3", "optimizer": "adam", "learning_rate": 0.001,
        "label_smoothing": 0.1, "augmentation": {"enabled": False}}  # fmt: skip


def test_adding_a_training_variant_trains_and_analyses_only_it(tiny_study):
    """Over the finished study: the variant's cells are trained and analysed under
    results/variants/<name>/ (no sensitivity: Table 2's figures are the reference's) and
    what compares the variants runs; every file of the reference is left alone."""
    results = tiny_study / "results"
    kept = {
        path: path.stat().st_mtime_ns
        for path in results.rglob("*")
        if path.is_file() and "variants" not in path.name and "variants" not in path.parts
    }
    assert any("train" in path.parts for path in kept)
    write_config(tiny_study, initializer_settings=FIXTURE_SETTINGS,
                 variants={"overrides": [ADAM]})  # fmt: skip
    try:
        jobs = planned_jobs(snakemake(tiny_study, "-n", *EVERYTHING).stdout)
        per_cell = ["train", "export_checkpoint", "fold_bn", "calibrate", "quantize",
                    "evaluate", "layerwise"]  # fmt: skip
        assert jobs == {**dict.fromkeys(per_cell, 4), "collect_variants": 2, "variants": 1,
                        "all": 1}  # fmt: skip
        result = snakemake(tiny_study, *EVERYTHING)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert {path: path.stat().st_mtime_ns for path in kept} == kept

        cell = results / "variants" / "adam_1e-3" / "DWS_Conv_With_BN" / "HeUni" / "seed0"
        assert json.loads((cell / "train" / "status.json").read_text())["variant"] == "adam_1e-3"
        log = (cell / "train" / "train.log").read_text()
        assert "training variant adam_1e-3" in log
        metrics = pd.read_parquet(cell / "epoch1" / "q" / "quint8" / "metrics.parquet").iloc[0]
        reference = pd.read_parquet(cell_dir(tiny_study, "DWS_Conv_With_BN") / "metrics.parquet")
        assert metrics.variant == "adam_1e-3" and reference.variant.iloc[0] == "paper"
        assert metrics.fp32_accuracy != reference.fp32_accuracy.iloc[0]  # trained otherwise

        table = pd.read_csv(results / "study" / "variants.csv")
        assert list(dict.fromkeys(table.Variant)) == ["paper", "adam_1e-3"]
        assert len(table) == 2 * 4
        text = (results / "study" / "variants.md").read_text()
        # the settings as the validated config holds them (keys sorted)
        settings = "augmentation.enabled False, label_smoothing 0.1, learning_rate 0.001, " \
            "optimizer adam"  # fmt: skip
        assert f"## adam_1e-3: {settings}" in text
        assert "| claim | paper | adam_1e-3 |" in text
        claims = pd.read_csv(results / "study" / "variants_claims.csv")
        assert set(claims.verdict) <= set(VERDICTS) and set(claims.variant) == {
            "paper", "adam_1e-3"
        }  # fmt: skip
        assert (results / "study" / "figures" / "variants.png").stat().st_size > 0
    finally:
        write_config(tiny_study, initializer_settings=FIXTURE_SETTINGS)
    # back to the reference alone: only what compares the variants reruns
    jobs = planned_jobs(snakemake(tiny_study, "-n", *EVERYTHING).stdout)
    assert jobs == {"collect_variants": 2, "variants": 1, "all": 1}
    assert snakemake(tiny_study, *EVERYTHING).returncode == 0


BLOCK_CELLS = {arch: f"results/{arch}/HeUni/seed0/epoch1" for arch in ("Residual_With_BN",
               "InvResidual_No_BN")}  # fmt: skip


def test_residual_blocks_run_the_whole_chain(tiny_study):
    """One cell of each block type of the sequel, asked for by path: trained, folded (the
    calibrate job checks the fold), calibrated with the Add outputs among the quantized
    tensors, quantized, evaluated with a TFLite model whose ADD ops match, layerwise and
    sensitivity tables with a row per kernel layer."""
    targets = [f"{cell}/q/quint8/{name}.parquet" for cell in BLOCK_CELLS.values()
               for name in ("metrics", "layerwise", "sensitivity")]  # fmt: skip
    result = snakemake(tiny_study, *targets)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for arch, cell in BLOCK_CELLS.items():
        q = tiny_study / cell / "q" / "quint8"
        layers = json.loads(
            str(np.load(tiny_study / cell / "weights.npz")["layers"])
        )  # fmt: skip
        calibration = pd.read_parquet(q / "calibration.parquet")
        adds = calibration[calibration.kind == "add"]
        # residual: an Add (and its ReLU) per block; inverted: where the shapes match
        assert len(adds) == {"Residual_With_BN": 5, "InvResidual_No_BN": 3}[arch]
        assert calibration.order.tolist() == list(range(len(calibration)))
        assert len(calibration) == 1 + len(layers) + len(adds)
        activations = pd.read_parquet(q / "quantization.parquet").query("role == 'activation'")
        assert set(adds.tensor) <= set(activations.tensor)
        metrics = pd.read_parquet(q / "metrics.parquet").iloc[0]
        # one epoch at width x0.125 need not learn; every stage runs all the same
        assert metrics.status != "diverged" and metrics.fp32_accuracy > 0
        assert pd.isna(metrics.tflite_error) and metrics.tflite_int8_accuracy > 0
        details = tflite_tensor_details((q / "model_int8.tflite").read_bytes())
        add_ops = {d["op"] for d in details if d["role"] == "activation" and d["op"] == "ADD"}
        assert add_ops == {"ADD"}
        assert len(pd.read_parquet(q / "layerwise.parquet")) == len(layers)
        sensitivity = pd.read_parquet(q / "sensitivity.parquet")
        assert sensitivity.layer.tolist() == [layer["name"] for layer in layers]
        quant_error = pd.read_parquet(q / "quant_error.parquet")
        assert quant_error.tflite_sqnr_db.notna().all()
