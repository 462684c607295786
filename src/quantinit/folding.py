"""BatchNorm folding, the paper's Eq. 3.

A BatchNormalization layer in inference mode computes, per channel c,
``y_c = gamma_c * (z_c - moving_mean_c) / sqrt(moving_var_c + eps) + beta_c``.
When ``z = w * x + b`` comes from the preceding convolution or dense layer, the BatchNorm is
absorbed into that layer's parameters:

    s_c    = gamma_c / sqrt(moving_var_c + eps)
    w_fold = s_c * w                       (scaling every weight that produces channel c)
    b_fold = beta_c + (b_c - moving_mean_c) * s_c

Kernel layouts are Keras': conv and pointwise (K, K, in, out), dense (in, out), whose output
channels run along the last axis; depthwise (K, K, in, 1) with depth_multiplier 1, whose
output channel c is input channel c, so the BatchNorm scales along axis 2.
"""

from __future__ import annotations

import numpy as np

KINDS = ("conv", "pointwise", "dense", "depthwise")
_KERNEL_NDIM = {"conv": 4, "pointwise": 4, "dense": 2, "depthwise": 4}


def channel_axis(kind: str) -> int:
    """The kernel axis indexing the layer's output channels: 2 for depthwise, else -1 (last)."""
    if kind not in KINDS:
        raise ValueError(f"unknown layer kind {kind!r}; allowed: {', '.join(KINDS)}")
    return 2 if kind == "depthwise" else -1


def _check_kernel(kernel: np.ndarray, kind: str) -> None:
    """Raise ValueError unless `kernel` has the Keras layout of `kind` (see module docstring)."""
    if kernel.ndim != _KERNEL_NDIM[kind]:
        raise ValueError(
            f"a {kind} kernel has {_KERNEL_NDIM[kind]} dimensions, got shape {kernel.shape}"
        )
    if kind == "depthwise" and kernel.shape[-1] != 1:
        raise ValueError(f"depthwise kernels need depth_multiplier 1, got shape {kernel.shape}")


def fold_batchnorm(
    kernel: np.ndarray,
    bias: np.ndarray | None,
    gamma: np.ndarray,
    beta: np.ndarray,
    moving_mean: np.ndarray,
    moving_var: np.ndarray,
    epsilon: float,
    kind: str,
) -> tuple[np.ndarray, np.ndarray]:
    """The kernel and bias of a layer followed by BatchNorm, with the BatchNorm folded in.

    Computes Eq. 3 (module docstring) in float64 and returns ``(w_fold, b_fold)`` as float32;
    ``bias=None`` means a layer without bias (b = 0). The BatchNorm vectors and the bias must
    have one entry per output channel, the kernel's ``channel_axis(kind)`` entries; otherwise
    ValueError names the shapes.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    axis = channel_axis(kind)
    _check_kernel(kernel, kind)
    n_channels = kernel.shape[axis]
    bias = np.zeros(n_channels) if bias is None else bias
    vectors = {
        "bias": bias,
        "gamma": gamma,
        "beta": beta,
        "moving_mean": moving_mean,
        "moving_var": moving_var,
    }
    vectors = {name: np.asarray(v, dtype=np.float64) for name, v in vectors.items()}
    for name, v in vectors.items():
        if v.shape != (n_channels,):
            raise ValueError(
                f"{name} has shape {v.shape} but the {kind} kernel of shape {kernel.shape} "
                f"has {n_channels} output channels along axis {axis}"
            )
    scale = vectors["gamma"] / np.sqrt(vectors["moving_var"] + epsilon)
    broadcast_shape = [1] * kernel.ndim
    broadcast_shape[axis] = n_channels
    w_fold = kernel * scale.reshape(broadcast_shape)
    b_fold = vectors["beta"] + (vectors["bias"] - vectors["moving_mean"]) * scale
    return w_fold.astype(np.float32), b_fold.astype(np.float32)
