"""A cell's weight files, for the numpy-only stages: layers.npz (every layer's spec and
weights, written by training) and weights.npz (trained and BN-folded kernels, written by
fold_bn). Its own module, apart from the Parquet schemas (quantinit.cellfiles), so training's
code hash does not change when an analysis table does.
"""

from __future__ import annotations

import json

import numpy as np


def save_weights(path, layers, trained: dict, folded: dict, tensors: dict) -> None:
    """Write trained and BN-folded kernels (and folded biases) of every kernel layer, and
    the network's quantized tensors ({layer: kind}, analysis.quantized_tensors_of).

    `layers`: KernelLayer-like objects; stored as JSON so numpy-only stages can read them.
    """
    from quantinit.io import atomic_path

    arrays = {
        "layers": np.array(json.dumps([dict(vars(layer)) for layer in layers])),
        "tensors": np.array(json.dumps(list(tensors.items()))),
    }
    for layer in layers:
        arrays[f"{layer.name}/kernel"] = trained[layer.name]
        arrays[f"{layer.name}/folded_kernel"] = folded[layer.name]["kernel"]
        arrays[f"{layer.name}/folded_bias"] = folded[layer.name]["bias"]
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def load_weights(path):
    """(layers as SimpleNamespace list, trained kernels, folded kernels) from save_weights."""
    from types import SimpleNamespace

    with np.load(path) as stored:
        layers = [SimpleNamespace(**layer) for layer in json.loads(str(stored["layers"]))]
        trained = {layer.name: stored[f"{layer.name}/kernel"] for layer in layers}
        folded = {layer.name: stored[f"{layer.name}/folded_kernel"] for layer in layers}
    return layers, trained, folded


def load_tensor_kinds(path) -> dict[str, str]:
    """{quantized tensor: kind} in network order, as save_weights wrote them."""
    with np.load(path) as stored:
        return dict(json.loads(str(stored["tensors"])))


def load_folded(path) -> dict:
    """{kernel layer: {"kernel", "bias"}} of the BN-folded weights save_weights wrote (what
    analysis.folded_model takes)."""
    with np.load(path) as stored:
        names = [layer["name"] for layer in json.loads(str(stored["layers"]))]
        return {
            name: {"kernel": stored[f"{name}/folded_kernel"], "bias": stored[f"{name}/folded_bias"]}
            for name in names
        }


def save_layers(path, specs: list[dict], weights: dict) -> None:
    """A trained network for numpy-only stages: its layer specs (analysis.layer_specs, in
    order, as JSON) and every layer's weights (analysis.layer_weights) as "<layer>/<i>"."""
    from quantinit.io import atomic_path

    arrays = {"specs": np.array(json.dumps(specs))}
    for name, values in weights.items():
        for i, value in enumerate(values):
            arrays[f"{name}/{i}"] = value
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def load_layers(path) -> tuple[list[dict], dict]:
    """(specs, {layer: [weights in Keras order]}) as save_layers wrote them."""
    with np.load(path) as stored:
        specs = json.loads(str(stored["specs"]))
        weights: dict[str, list] = {}
        for key in stored.files:
            if key != "specs":
                name, index = key.rsplit("/", 1)
                weights.setdefault(name, {})[int(index)] = stored[key]
    return specs, {name: [w[i] for i in sorted(w)] for name, w in weights.items()}
