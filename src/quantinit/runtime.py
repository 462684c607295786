"""TensorFlow process set-up for the rule scripts: CPU threads and GPU visibility."""

from __future__ import annotations


def configure_tensorflow(threads: int, use_gpu: bool) -> None:
    """Limit TensorFlow to `threads` CPU threads and decide what it may do with GPUs.

    Call it before TensorFlow creates its first tensor. A job that reserved no GPU hides
    every GPU, so an analysis job never takes GPU memory from the training jobs next to it.
    A GPU job takes GPU memory as it needs it (memory growth) instead of nearly all of it
    at start, which is what lets several training jobs share one GPU (README, "Training on
    GPUs").
    """
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    if not use_gpu:
        tf.config.set_visible_devices([], "GPU")
        return
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
