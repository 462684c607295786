"""End to end: the real Snakemake workflow on a tiny synthetic study."""

import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest
from workflow_helpers import planned_jobs, snakemake, snakemake_command, write_config

pytestmark = pytest.mark.slow

ARCHS = ["Regular_Conv_With_BN", "Regular_Conv_No_BN", "DWS_Conv_With_BN", "DWS_Conv_No_BN"]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    write_config(workdir)
    result = snakemake(workdir)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return workdir


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


def test_finished_study_has_nothing_to_do(tiny_study):
    result = snakemake(tiny_study, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_one_initializer_setting_reruns_only_its_cells(tiny_study):
    write_config(
        tiny_study,
        initializers=["HeUni", "RandUni_Small"],
        initializer_settings={"RandUni_Small": {"limit": 0.2}},
    )
    first = planned_jobs(snakemake(tiny_study, "-n").stdout)
    assert first["train"] == 4  # the 4 new RandUni_Small cells, no HeUni cell
    write_config(tiny_study)  # back to the finished study


def test_single_cell_target_runs_only_that_cell(tiny_study):
    target = "results/DWS_Conv_With_BN/GlorotUni/seed0/epoch1/model.keras"
    jobs = planned_jobs(snakemake(tiny_study, "-n", target).stdout)
    assert jobs == {"train": 1, "export_checkpoint": 1}


def test_killed_training_resumes_where_it_stopped(tmp_path):
    write_config(
        tmp_path,
        architectures=["Regular_Conv_With_BN"],
        data={"synthetic": {"train_samples": 1500}},
        training={"epochs": 8},
    )
    progress = tmp_path / "state/Regular_Conv_With_BN/HeUni/seed0/progress.json"
    process = subprocess.Popen(
        snakemake_command(tmp_path, cores=1),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    completed = 0
    while time.monotonic() < deadline and process.poll() is None:
        if progress.exists():
            completed = json.loads(progress.read_text())["epochs_completed"]
            if completed >= 2:
                break
        time.sleep(0.2)
    assert process.poll() is None, "training finished before it could be killed"
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
