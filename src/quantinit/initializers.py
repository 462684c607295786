"""The weight initializers of the paper's Table 1, built from Keras' initializers.

Keras computes fans as the paper's Eq. 1 (fan = K x K x channels). For a depthwise kernel
of shape (K, K, in, 1) this gives fan_in = K*K*in and fan_out = K*K, which is what makes
fan-aware initializers start depthwise layers very small (the paper's "vanishing act").
"""

from __future__ import annotations

INITIALIZER_NAMES = (
    "RandNorm_Large",
    "RandNorm_Med",
    "RandNorm_Small",
    "RandUni_Large",
    "RandUni_Med",
    "RandUni_Small",
    "ModGlorotUni_Large",
    "ModGlorotUni_Med",
    "GlorotUni",
    "GlorotNorm",
    "HeUni",
    "HeNorm",
)

# Table 1's hyperparameters; the workflow config can override them per name.
DEFAULT_SETTINGS = {
    "RandNorm_Large": {"stddev": 1.0},
    "RandNorm_Med": {"stddev": 0.5},
    "RandNorm_Small": {"stddev": 0.1},
    "RandUni_Large": {"limit": 1.0},
    "RandUni_Med": {"limit": 0.5},
    "RandUni_Small": {"limit": 0.25},
    "ModGlorotUni_Large": {"C": 1296},
    "ModGlorotUni_Med": {"C": 36},
}

_FAN_AWARE = {
    "GlorotUni": "GlorotUniform",
    "GlorotNorm": "GlorotNormal",
    "HeUni": "HeUniform",
    "HeNorm": "HeNormal",
}


def initializer_settings(name: str, overrides: dict | None = None) -> dict:
    """The hyperparameters of initializer `name`: Table 1's, updated by `overrides`."""
    if name not in INITIALIZER_NAMES:
        raise ValueError(f"unknown initializer {name!r}; allowed: {', '.join(INITIALIZER_NAMES)}")
    return {**DEFAULT_SETTINGS.get(name, {}), **(overrides or {})}


def make_initializer(name: str, seed: int, settings: dict | None = None):
    """A Keras initializer for the paper's initializer `name`, seeded.

    RandNorm_*: normal with the given stddev; RandUni_*: uniform on +-limit;
    ModGlorotUni_*: uniform on +-sqrt(C / (fan_in + fan_out)), which is Keras'
    VarianceScaling(scale=C/6, mode="fan_avg", distribution="uniform") because that
    samples on +-sqrt(3 * scale / ((fan_in + fan_out) / 2)) = +-sqrt(6 * scale / (fan_in +
    fan_out)).
    A seeded Keras initializer returns the same values at every call: build one per layer.
    """
    import keras

    params = initializer_settings(name, settings)
    if name.startswith("RandNorm"):
        return keras.initializers.RandomNormal(mean=0.0, stddev=params["stddev"], seed=seed)
    if name.startswith("RandUni"):
        limit = params["limit"]
        return keras.initializers.RandomUniform(minval=-limit, maxval=limit, seed=seed)
    if name.startswith("ModGlorotUni"):
        return keras.initializers.VarianceScaling(
            scale=params["C"] / 6.0, mode="fan_avg", distribution="uniform", seed=seed
        )
    return getattr(keras.initializers, _FAN_AWARE[name])(seed=seed)
