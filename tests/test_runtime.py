"""TensorFlow process set-up of the rule scripts (threads, GPU visibility)."""

import json
import os
import subprocess
import sys

import pytest

from quantinit.runtime import hidden_lines_removed

from conftest import REPO

PROBE = """
import json, sys
from quantinit.runtime import configure_tensorflow
configure_tensorflow(int(sys.argv[1]), use_gpu=sys.argv[2] == "1")
import tensorflow as tf
print(json.dumps({
    "intra": tf.config.threading.get_intra_op_parallelism_threads(),
    "inter": tf.config.threading.get_inter_op_parallelism_threads(),
    "visible_gpus": len(tf.config.get_visible_devices("GPU")),
    "physical_gpus": len(tf.config.list_physical_devices("GPU")),
    "sum": float(tf.reduce_sum(tf.ones(3))),
}))
"""


def configured(threads: int, use_gpu: bool) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(threads), "1" if use_gpu else "0"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("threads", "inter"), [(1, 1), (3, 2)])
def test_threads_follow_the_job_and_analysis_jobs_hide_gpus(threads, inter):
    state = configured(threads, use_gpu=False)
    assert (state["intra"], state["inter"]) == (threads, inter)
    assert state["visible_gpus"] == 0  # also on a machine that has GPUs
    assert state["sum"] == 3.0  # TensorFlow still computes, on the CPU


def test_a_gpu_job_sees_every_gpu():
    state = configured(2, use_gpu=True)
    assert state["visible_gpus"] == state["physical_gpus"]


# ------------------------------------------------------ TensorFlow's start-up lines in logs

LOGGED = """
import sys
from quantinit.io import redirect_output_to_log
redirect_output_to_log(sys.argv[1])
print("before TensorFlow")
from quantinit.runtime import configure_tensorflow
configure_tensorflow(1, use_gpu=False)
print("after TensorFlow")
"""
STARTUP = ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard")


@pytest.mark.parametrize("user_level", [None, "0"])
def test_rule_logs_lose_tensorflows_startup_lines_unless_asked_for(tmp_path, user_level):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if user_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = user_level  # a user who wants every line
    log = tmp_path / "rule.log"
    result = subprocess.run(
        [sys.executable, "-c", LOGGED, str(log)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )  # fmt: skip
    assert result.returncode == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert text.startswith("before TensorFlow\n") and text.endswith("after TensorFlow\n")
    shown = [line for line in STARTUP if line in text]
    assert shown == ([] if user_level is None else list(STARTUP)), text


def test_only_log_lines_below_the_level_are_removed():
    banner = b"WARNING: All log messages before absl::InitializeLog() is called are written\n"
    info = b"I0000 00:00:1796396891.455354    6689 port.cc:153] oneDNN custom operations\n"
    warning = b"W0604 12:00:01.000001 12 trt_convert.cc:9] TF-TRT Warning: no TensorRT\n"
    error = b"E0000 00:00:1796396897.360972    6689 cuda_dnn.cc:8] Unable to register cuDNN\n"
    other = b"Traceback (most recent call last):\n"
    written = banner + info + warning + error + other
    assert hidden_lines_removed(written, 0) == written
    assert hidden_lines_removed(written, 1) == banner + warning + error + other
    assert hidden_lines_removed(written, 2) == error + other
