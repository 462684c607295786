"""The SLURM profile on a real one-node SLURM cluster (scripts/slurm-cluster.sh).

The cluster runs on this machine as root: the module fixture brings it up (apt-installing
slurmctld, slurmd, slurm-client and munge where missing) and down again. Without root, or
where the packages cannot be installed, the tests are skipped with the reason.
"""

import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO
from workflow_helpers import snakemake_command, write_config

pytestmark = pytest.mark.slow

SCRIPT = REPO / "scripts" / "slurm-cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
PARTITION = "debug"  # scripts/slurm-cluster.sh's partition
CELL = "results/Regular_Conv_With_BN/HeUni/seed0/epoch1/q/quint8"
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.")


def cluster(action, timeout=900):
    env = {**os.environ, "SLURM_CLUSTER_PARTITION": PARTITION}
    return subprocess.run(
        ["bash", str(SCRIPT), action], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def slurm_cluster():
    # CI (.ci/run) sets QUANTINIT_REQUIRE_SLURM=1: there, not running these tests is a failure
    skip = pytest.fail if os.environ.get("QUANTINIT_REQUIRE_SLURM") == "1" else pytest.skip
    if os.geteuid() != 0:
        skip("the test SLURM cluster runs as root (scripts/slurm-cluster.sh)")
    if shutil.which("sinfo") is None and shutil.which("apt-get") is None:
        skip("SLURM is not installed and there is no apt-get to install it")
    was_up = shutil.which("sinfo") is not None and cluster("status").returncode == 0
    result = cluster("up")
    if result.returncode == 2:
        skip(f"SLURM cannot be installed here: {result.stderr.strip()[-2000:]}")
    assert result.returncode == 0, result.stdout + result.stderr
    yield
    if not was_up:
        down = cluster("down")
        assert down.returncode == 0, down.stdout + down.stderr


def overlay_profile(workdir, train=None):
    """profiles/slurm as it is, except what this one-node, GPU-less test cluster needs.

    Written as a second --profile, whose top-level keys replace the first profile's: the
    partitions become the test cluster's, no account, no GPU for train (a real cluster
    keeps the profile's gpu: 1), memory within a CI machine's, squeue as status command
    (no accounting database), fast status polling, and kept per-job logs to inspect.
    """
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())

    def fit(resources):
        resources = {k: v for k, v in resources.items() if k != "slurm_account"}
        if "slurm_partition" in resources:
            resources["slurm_partition"] = PARTITION
        if "mem_mb" in resources:
            resources["mem_mb"] = min(resources["mem_mb"], 1000)
        return resources

    set_resources = {rule: fit(res) for rule, res in profile["set-resources"].items()}
    set_resources["train"]["gpu"] = 0
    set_resources["train"].update(train or {})
    overlay = {
        "default-resources": fit(profile["default-resources"]),
        "set-resources": set_resources,
        "slurm-no-account": True,
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-keep-successful-logs": True,
        "retries": 0,
    }
    path = workdir / "test-profile" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(overlay))
    return path.parent


def run_on_slurm(workdir, *targets, train=None):
    command = snakemake_command(
        workdir,
        *targets,
        "--profile", str(PROFILE), "--profile", str(overlay_profile(workdir, train)),
        "--workflow-profile", "none",
    )  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    log = result.stdout + result.stderr
    submitted = {job: (slurm_id, path) for job, slurm_id, path in SUBMITTED.findall(log)}
    return result, log, submitted


def slurm_state(slurm_id):
    """JobState as scontrol and squeue report it (both from slurmctld: MinJobAge=600)."""
    shown = subprocess.run(
        ["scontrol", "show", "job", slurm_id], capture_output=True, text=True, check=True
    ).stdout
    state = re.search(r"JobState=(\w+)", shown).group(1)
    listed = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%T", "--jobs", slurm_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listed == [f"{slurm_id}|{state}"], (listed, state)
    return state, shown


def test_profile_requests_gpu_and_groups_cells(tmp_path):
    """The profile as a real cluster gets it (a dry run: no cluster needed)."""
    write_config(tmp_path)
    result = subprocess.run(
        snakemake_command(
            tmp_path, "-n", "--workflow-profile", str(PROFILE), f"{CELL}/metrics.parquet"
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resources = dict(re.findall(r"rule (\w+):\n(?:.*\n)*?\s+resources: (.*)", result.stdout))
    train = dict(kv.split("=", 1) for kv in resources["train"].split(", "))
    assert train["gpu"] == "1" and train["runtime"] == "1440"  # not the tiny config's gpu: 0
    assert train["slurm_partition"] == "CHANGE-ME-gpu-partition"
    evaluate = dict(kv.split("=", 1) for kv in resources["evaluate"].split(", "))
    assert evaluate["slurm_partition"] == "CHANGE-ME-cpu-partition"
    assert evaluate.get("gpu", "0") == "0"  # sbatch asks for no GPU
    assert train["slurm_extra"] == "--signal=TERM@120"


def test_cell_runs_as_slurm_jobs_one_per_stage_group(slurm_cluster, tmp_path):
    write_config(tmp_path, architectures=["Regular_Conv_With_BN"])
    result, log, submitted = run_on_slurm(
        tmp_path, f"{CELL}/metrics.parquet", f"{CELL}/layerwise.parquet"
    )
    assert result.returncode == 0, log[-8000:]
    assert (tmp_path / CELL / "metrics.parquet").exists()
    assert (tmp_path / CELL / "layerwise.parquet").exists()

    # prepare_data, train, the architecture's engine (once for all its cells), and the
    # cell's six analysis stages as one group job
    assert len(submitted) == 4, log[-8000:]
    logs = tmp_path / ".snakemake" / "slurm_logs"
    folders = sorted(p.relative_to(logs).parts[0] for p in logs.rglob("*.log"))
    assert folders[1:] == ["rule_build_engine", "rule_prepare_data", "rule_train"], folders
    assert folders[0].startswith("group_cell_"), folders  # group_<group>_<its rules>...
    for slurm_id, path in submitted.values():
        assert os.path.isfile(path) and path.startswith(str(logs)), path
        state, shown = slurm_state(slurm_id)
        assert state == "COMPLETED", shown
        assert f"WorkDir={tmp_path}" in shown
    ((train_id, _),) = [(i, p) for i, p in submitted.values() if "/rule_train/" in p]
    assert "TimeLimit=1-00:00:00" in slurm_state(train_id)[1]  # the profile's runtime: 1440
    group_log = next(logs.glob("group_cell_*/*.log")).read_text()
    for rule in ["export_checkpoint", "fold_bn", "calibrate", "quantize", "evaluate", "layerwise"]:
        assert f"rule {rule}:" in group_log, group_log[-3000:]


def test_failing_job_is_reported_failed(slurm_cluster, tmp_path):
    write_config(
        tmp_path,
        architectures=["Regular_Conv_With_BN"],
        data={"source": "image_folder", "image_folder": str(tmp_path / "no-such-folder")},
    )
    result, log, submitted = run_on_slurm(tmp_path, f"{CELL}/metrics.parquet")
    assert result.returncode != 0
    assert "Error in rule prepare_data" in log, log[-8000:]
    # nothing after the failed job is submitted; build_engine needs no data, so it may run
    failed = [(i, p) for i, p in submitted.values() if "/rule_prepare_data/" in p]
    others = [p for _, p in submitted.values() if "/rule_prepare_data/" not in p]
    assert all("/rule_build_engine/" in p for p in others), log[-8000:]
    ((slurm_id, path),) = failed
    assert f"SLURM-job '{slurm_id}' failed" in log, log[-8000:]
    state, shown = slurm_state(slurm_id)
    assert state == "FAILED", shown
    # the failed job's SLURM log is kept and shows the rule's error; its log the reason
    slurm_log = next((tmp_path / ".snakemake" / "slurm_logs").rglob(f"{slurm_id}.log"))
    assert os.path.samefile(slurm_log, path)
    assert "Error in rule prepare_data" in slurm_log.read_text()
    rule_log = (tmp_path / "results/logs/prepare_data.log").read_text()
    assert "no-such-folder' does not exist" in rule_log


def test_time_limit_signal_stops_training_with_its_state_saved(slurm_cluster, tmp_path):
    """The profile's --signal=TERM@120 reaches the training process before the limit.

    A 4-minute limit puts the signal 90 to 30 s after the start (SLURM sends it up to 60 s
    early); 300 epochs of this tiny cell take far longer.
    """
    write_config(
        tmp_path,
        architectures=["Regular_Conv_With_BN"],
        data={"synthetic": {"train_samples": 1500}},
        training={"epochs": 300},
    )
    train = "results/Regular_Conv_With_BN/HeUni/seed0/train"
    result, log, submitted = run_on_slurm(
        tmp_path, f"{train}/history.parquet", train={"runtime": 4}
    )
    assert result.returncode != 0
    ((slurm_id, _),) = [(i, path) for i, path in submitted.values() if "/rule_train/" in path]
    state, shown = slurm_state(slurm_id)
    assert state == "FAILED", shown  # ended by the training script, not by the time limit
    train_log = (tmp_path / train / "train.log").read_text()
    saved = re.search(r"stopped by SIGTERM: the state after epoch (\d+) of 300", train_log)
    assert saved, train_log[-3000:]
    (progress,) = (tmp_path / "state/Regular_Conv_With_BN/HeUni/seed0").glob("*/progress.json")
    assert yaml.safe_load(progress.read_text())["epochs_completed"] == int(saved.group(1)) >= 1
