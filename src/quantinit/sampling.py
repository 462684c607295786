"""Which images a stage uses: seeded draws without replacement, one stream per purpose, so
the same (seed, purpose) gives the same images in every stage and every run."""

from __future__ import annotations

import numpy as np


def seeded_indices(total: int, count: int, seed: int, stream: int, what: str) -> np.ndarray:
    """`count` of `total` indices drawn without replacement from (seed, stream), sorted."""
    if count > total:
        raise ValueError(f"{what} = {count} exceeds the {total} images available")
    return np.sort(np.random.default_rng([seed, stream]).choice(total, count, False))


def calibration_indices(num_train: int, num_samples: int, seed: int) -> np.ndarray:
    """The training images used for calibration: a seeded draw without replacement."""
    return seeded_indices(num_train, num_samples, seed, 1024, "calibration.num_samples")


def sensitivity_indices(num_test: int, num_images: int, seed: int) -> np.ndarray:
    """The test images of the per-layer error and sensitivity analysis (all if more asked)."""
    count = min(num_images, num_test)
    return seeded_indices(num_test, count, seed, 7, "sensitivity.num_images")
