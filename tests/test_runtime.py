"""TensorFlow process set-up of the rule scripts (threads, GPU visibility)."""

import json
import subprocess
import sys

import pytest

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
