"""The weight initializers of the paper's Table 1, built from Keras' initializers.

Keras computes fans as the paper's Eq. 1 (fan = K x K x channels). For a depthwise kernel
of shape (K, K, in, 1) this gives fan_in = K*K*in and fan_out = K*K, which is what makes
fan-aware initializers start depthwise layers very small (the paper's "vanishing act").
"""

from __future__ import annotations

from quantinit.registry import INITIALIZERS, initializer

INITIALIZER_NAMES = tuple(INITIALIZERS)


def initializer_settings(name: str, overrides: dict | None = None) -> dict:
    """The hyperparameters of initializer `name`: Table 1's, updated by `overrides`."""
    return {**initializer(name).defaults, **(overrides or {})}


def make_initializer(name: str, seed: int, settings: dict | None = None):
    """A Keras initializer for the paper's initializer `name`, seeded (see its registry
    entry: RandNorm_* normal with the given stddev, RandUni_* uniform on +-limit,
    ModGlorotUni_* uniform on +-sqrt(C / (fan_in + fan_out)), the rest Keras' own).
    A seeded Keras initializer returns the same values at every call: build one per layer.
    """
    import keras

    spec = initializer(name)
    arguments = spec.keras_arguments(initializer_settings(name, settings))
    return getattr(keras.initializers, spec.keras_class)(**arguments, seed=seed)
