"""End to end: the real Snakemake workflow on a tiny synthetic study."""

import json
import os
import signal
import subprocess
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from quantinit.tables import arrow_schema

from workflow_helpers import planned_jobs, snakemake, snakemake_command, write_config

pytestmark = pytest.mark.slow

ARCHS = ["Regular_Conv_With_BN", "Regular_Conv_No_BN", "DWS_Conv_With_BN", "DWS_Conv_No_BN"]


DIVERGING = "results/Regular_Conv_No_BN/RandNorm_Large/seed0/epoch1"
FIXTURE_SETTINGS = {"RandNorm_Large": {"stddev": 20.0}}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The 4 architectures with HeUni, and one cell made to diverge (RandNorm std 20)."""
    workdir = tmp_path_factory.mktemp("tiny")
    write_config(workdir, initializer_settings=FIXTURE_SETTINGS)
    diverging = [f"{DIVERGING}/{name}.parquet" for name in ("metrics", "layerwise", "sensitivity")]
    result = snakemake(workdir, "all", *diverging)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return workdir


def cell_dir(workdir, arch, init="HeUni"):
    return workdir / "results" / arch / init / "seed0" / "epoch1"


TABLES = ["calibration", "quantization", "metrics", "layerwise", "quant_error", "sensitivity"]


@pytest.mark.parametrize("table", TABLES)
def test_every_table_conforms_to_its_schema(tiny_study, table):
    for arch in ARCHS:
        stored = pq.read_table(cell_dir(tiny_study, arch) / f"{table}.parquet")
        assert stored.schema.equals(arrow_schema(table), check_metadata=False), arch
    diverged = pq.read_table(tiny_study / DIVERGING / f"{table}.parquet")
    assert diverged.schema.equals(arrow_schema(table), check_metadata=False)


def test_metrics_of_trained_cells(tiny_study):
    for arch in ARCHS:
        metrics = pd.read_parquet(cell_dir(tiny_study, arch) / "metrics.parquet").iloc[0]
        history = pd.read_parquet(cell_dir(tiny_study, arch).parent / "train/history.parquet")
        # the same model on the same test images as training's last validation
        assert metrics.fp32_accuracy == pytest.approx(100 * history.val_accuracy.iloc[-1])
        assert 0 <= metrics.quint8_accuracy <= 100 and 0 <= metrics.tflite_int8_accuracy <= 100
        assert metrics.qmse >= 0 and metrics.qce >= 0
        assert metrics.status in {"ok", "not_learning"} and metrics.arch == arch


def test_diverged_cell_yields_rows_marked_diverged(tiny_study):
    status = json.loads((tiny_study / DIVERGING / "cell.json").read_text())["status"]
    assert status == "diverged"
    metrics = pd.read_parquet(tiny_study / DIVERGING / "metrics.parquet")
    assert list(metrics.status) == ["diverged"] and metrics.fp32_accuracy.isna().all()
    layerwise = pd.read_parquet(tiny_study / DIVERGING / "layerwise.parquet")
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
    dynamics = pd.read_parquet(cell.parent / "train/dynamics.parquet")
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
    assert "| Network | FP32 Accuracy |" in (study / "table2.md").read_text()
    comparison = pd.read_csv(study / "comparison.csv")
    assert len(comparison) == 33 + 1  # the paper's rows and DWS_Conv_No_BN_HeUni (not in it)
    for name in ("figure2_vanishing_act", "figure3_layerwise", "degradation_heatmap",
                 "accuracy_vs_epoch", "dynamics_DWS_Conv_With_BN_HeUni",
                 "sensitivity_DWS_Conv_With_BN_HeUni"):  # fmt: skip
        assert (study / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (study / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"


def test_quant_error_and_sensitivity_join_layerwise(tiny_study):
    cell = cell_dir(tiny_study, "DWS_Conv_With_BN")
    layerwise = pd.read_parquet(cell / "layerwise.parquet")
    errors = pd.read_parquet(cell / "quant_error.parquet")
    sensitivity = pd.read_parquet(cell / "sensitivity.parquet")
    assert list(errors.layer) == list(layerwise.layer) == list(sensitivity.layer)
    assert (errors.num_images == 100).all() and (errors.rmse_over_scale >= 0).all()
    metrics = pd.read_parquet(cell / "metrics.parquet").iloc[0]
    assert sorted(sensitivity["rank"]) == list(range(1, len(sensitivity) + 1))
    # on its 100 images, the fully quantized model's accuracy is a multiple of 1%
    assert (sensitivity.quint8_accuracy % 1 == 0).all() and 0 <= metrics.qce
    summary = json.loads((cell / "sensitivity_summary.json").read_text())
    first = sensitivity.set_index("rank").loc[1]
    assert summary["most_sensitive"][0]["layer"] == first.layer
    most = pd.read_csv(tiny_study / "results/study/most_sensitive.csv").set_index("Network")
    assert most.loc["DWS_Conv_With_BN_HeUni", "Most sensitive layer"] == first.layer
    diverged = pd.read_parquet(tiny_study / DIVERGING / "sensitivity.parquet")
    assert set(diverged.status) == {"diverged"} and diverged.only_accuracy.isna().all()


def test_report_gathers_tables_and_figures(tiny_study):
    result = snakemake(tiny_study, "--report", "report.html")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = (tiny_study / "report.html").read_text(errors="replace")
    for name in (
        "table2.csv",
        "comparison.csv",
        "figure2_vanishing_act.png",
        "figure3_layerwise.png",
    ):
        assert name in html


def test_finished_study_has_nothing_to_do(tiny_study):
    result = snakemake(tiny_study, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_one_initializer_setting_reruns_only_its_cells(tiny_study):
    targets = ("all", f"{DIVERGING}/metrics.parquet")
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
    assert snakemake(tiny_study, "--touch").returncode == 0
    assert "Nothing to be done" in snakemake(tiny_study, "-n").stdout


def test_deleting_one_intermediate_reruns_only_what_depends_on_it(tiny_study):
    relative = "results/DWS_Conv_With_BN/HeUni/seed0/epoch1/calibration.parquet"
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
        assert snakemake(tiny_study, "--touch").returncode == 0  # its mtime is new now
    per_cell = {"calibrate", "quantize", "evaluate", "layerwise", "quant_sensitivity"}
    assert {rule: jobs[rule] for rule in per_cell if rule in jobs} == dict.fromkeys(per_cell, 1)
    assert not {"prepare_data", "train", "export_checkpoint", "fold_bn"} & set(jobs)
    assert jobs["table2"] == 1  # and the study's tables and figures that read this cell
    assert "Nothing to be done" in snakemake(tiny_study, "-n").stdout


def test_single_cell_target_runs_only_that_cell(tiny_study):
    target = "results/DWS_Conv_With_BN/GlorotUni/seed0/epoch1/metrics.parquet"
    jobs = planned_jobs(snakemake(tiny_study, "-n", target).stdout)
    chain = ["train", "export_checkpoint", "fold_bn", "calibrate", "quantize", "evaluate"]
    assert jobs == dict.fromkeys(chain, 1)


def start_and_wait_for_epochs(workdir, progress, epochs, *targets):
    """Start Snakemake in its own process group; return once `epochs` epochs are saved."""
    process = subprocess.Popen(
        snakemake_command(workdir, *targets, cores=1),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if progress.exists() and json.loads(progress.read_text())["epochs_completed"] >= epochs:
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
    progress = tmp_path / "state/Regular_Conv_With_BN/HeUni/seed0/progress.json"
    process = start_and_wait_for_epochs(tmp_path, progress, 2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = json.loads(progress.read_text())["epochs_completed"]
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
    progress = stopped / "state/Regular_Conv_With_BN/HeUni/seed0/progress.json"
    process = start_and_wait_for_epochs(stopped, progress, 2, f"{train_dir}/history.parquet")
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    stopped_at = json.loads(progress.read_text())["epochs_completed"]
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
