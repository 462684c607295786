"""TensorFlow process set-up for the rule scripts: CPU threads, GPU visibility, quiet start."""

from __future__ import annotations

import os
import re
import sys
import tempfile

# A line of TensorFlow's C++ log: severity (Info, Warning, Error, Fatal), date, time, thread,
# source file and line, e.g. "I0000 00:00:1796396891.455354    6689 port.cc:153] oneDNN ..."
_CPP_LOG_LINE = re.compile(rb"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\s\]]+:\d+\] ")
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}  # TF_CPP_MIN_LOG_LEVEL hides those below it
# absl's notice before the first such line; a warning
_ABSL_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written"


def configure_tensorflow(threads: int, use_gpu: bool) -> None:
    """Limit TensorFlow to `threads` CPU threads and decide what it may do with GPUs.

    Call it before TensorFlow creates its first tensor, and before anything else imports
    TensorFlow, so that its start-up lines stay out of the log (import_tensorflow). A job
    that reserved no GPU hides every GPU, so an analysis job never takes GPU memory from
    the training jobs next to it.
    A GPU job takes GPU memory as it needs it (memory growth) instead of nearly all of it
    at start, which is what lets several training jobs share one GPU (README, "Training on
    GPUs").
    """
    tf = import_tensorflow()

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    if not use_gpu:
        tf.config.set_visible_devices([], "GPU")
        return
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def import_tensorflow():
    """`import tensorflow`, without the start-up lines that TF_CPP_MIN_LOG_LEVEL misses.

    While it loads, TensorFlow's C++ code logs a few lines before it reads
    TF_CPP_MIN_LOG_LEVEL (TensorFlow 2.21: "oneDNN custom operations are on", twice, each
    after absl's "All log messages before absl::InitializeLog() ..."). The import's stderr
    is captured and passed on without the lines that the level hides (INFO from 1, WARNING
    from 2); errors and every other line are kept.
    """
    level = _min_log_level()
    if level == 0:
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            os.write(2, hidden_lines_removed(captured.read(), level))
    return tf


def hidden_lines_removed(written: bytes, level: int) -> bytes:
    """`written` without the C++ log lines below TF_CPP_MIN_LOG_LEVEL `level`."""
    lines = written.splitlines(keepends=True)
    return b"".join(line for line in lines if _severity(line) >= level)


def _min_log_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def _severity(line: bytes) -> int:
    """A C++ log line's severity (0 INFO ... 3 FATAL); any other line counts as an error."""
    if line.startswith(_ABSL_BANNER):
        return _SEVERITY[b"W"]
    match = _CPP_LOG_LINE.match(line)
    return _SEVERITY[match.group(1)] if match else _SEVERITY[b"E"]
