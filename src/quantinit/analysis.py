"""The network of one trained cell: its layers and quantized tensors (from layer specs, no
Keras needed), BN folding, and the per-epoch statistics recorded during training.

A Keras model is rebuilt layer by layer, in its topological order, from the layers' own
configs and the names of the layers each one reads (chains and the residual blocks of
models.py alike): folding drops each BatchNormalization and gives the layer before it a
bias. The simulated quantized network runs on the architecture's LiteRT engine
(quantinit.engine).

Quantized tensors, in order: the rescaled input image, the output of every kernel layer
after its ReLU (conv, depthwise, pointwise, dense), the logits, and in residual networks
every Add's output (after its ReLU). Max-pooling and
flattening keep their input's quantization, as in TFLite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from quantinit.folding import channel_axis, fold_batchnorm

INPUT_TENSOR = "rescale"


@dataclass(frozen=True)
class KernelLayer:
    """A layer with a kernel, with what follows it in the chain."""

    order: int
    name: str
    kind: str  # conv | depthwise | pointwise | dense
    batchnorm: str | None
    output: str  # the layer whose output is this layer's quantized tensor (folded model)
    trained_output: str = ""  # the same tensor in the trained model (its BN where no ReLU)


# The config keys of a layer that the analysis reads besides its class and name
SPEC_KEYS = ("kernel_size", "epsilon")


def inbound_names(layer) -> list[str]:
    """The names of the layers whose outputs `layer` reads (none for the input)."""
    if not layer._inbound_nodes:
        return []
    tensors = layer._inbound_nodes[0].input_tensors
    return [tensor._keras_history.operation.name for tensor in tensors]


def layer_specs(model) -> list[dict]:
    """Every layer of `model` in its topological order as {"name", "class", "inbound" (the
    layers it reads) and its SPEC_KEYS}: what the numpy-only stages need to know of the
    network (JSON-serialisable)."""
    specs = []
    for layer in model.layers:
        config = layer.get_config()
        spec = {"name": layer.name, "class": type(layer).__name__, "inbound": inbound_names(layer)}
        spec.update({key: config[key] for key in SPEC_KEYS if key in config})
        specs.append(spec)
    return json.loads(json.dumps(specs))  # tuples as lists: as a file gives them back


def layer_weights(model) -> dict[str, list[np.ndarray]]:
    """{layer name: its weights (Keras order)} of every layer that has weights."""
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def _kind(spec: dict) -> str | None:
    if spec["class"] == "DepthwiseConv2D":
        return "depthwise"
    if spec["class"] == "Conv2D":
        return "pointwise" if tuple(spec["kernel_size"]) == (1, 1) else "conv"
    if spec["class"] == "Dense":
        return "dense"
    return None


def _readers(specs: list[dict]) -> dict[str, list[dict]]:
    """{layer name: the specs of the layers that read its output}. Specs without "inbound"
    (written before the models had branches) are a chain: each reads the one before it."""
    readers: dict[str, list[dict]] = {spec["name"]: [] for spec in specs}
    for index, spec in enumerate(specs):
        sources = spec.get("inbound", [specs[index - 1]["name"]] if index else [])
        for source in sources:
            readers[source].append(spec)
    return readers


def kernel_layers_of(specs: list[dict]) -> list[KernelLayer]:
    """The kernel layers of a model given as layer_specs, in order, with their BN and
    output layers: a BatchNormalization that is the kernel's only reader is its BN, a ReLU
    that is the only reader of the kernel (or of its BN) its output."""
    readers = _readers(specs)

    def only_reader(name: str, layer_class: str) -> str | None:
        following = readers[name]
        if len(following) == 1 and following[0]["class"] == layer_class:
            return following[0]["name"]
        return None

    found = []
    for spec in specs:
        kind = _kind(spec)
        if kind is None:
            continue
        batchnorm = only_reader(spec["name"], "BatchNormalization")
        relu = only_reader(batchnorm or spec["name"], "ReLU")
        found.append(
            KernelLayer(
                len(found),
                spec["name"],
                kind,
                batchnorm,
                output=relu or spec["name"],
                trained_output=relu or batchnorm or spec["name"],
            )
        )
    return found


def kernel_layers(model) -> list[KernelLayer]:
    """The kernel layers of a Keras model (kernel_layers_of its layer_specs)."""
    return kernel_layers_of(layer_specs(model))


ADD = "add"  # the kind of a residual Add's output among the quantized tensors


def quantized_tensors_of(specs: list[dict]) -> dict[str, str]:
    """{layer whose output is quantized: kind} in network order: the input image (kind
    input), every kernel layer's output (its kind) and every Add's output (kind add; its
    ReLU's where a ReLU is its only reader, as TFLite fuses it into ADD). A kernel layer
    that feeds an Add is quantized before it: TFLite's ADD takes two quantized inputs."""
    readers = _readers(specs)
    outputs = {k.name: (k.output, k.kind) for k in kernel_layers_of(specs)}
    tensors = {INPUT_TENSOR: "input"}
    for spec in specs:
        if spec["name"] in outputs:
            name, kind = outputs[spec["name"]]
            tensors[name] = kind
        elif spec["class"] == "Add":
            following = readers[spec["name"]]
            relu = len(following) == 1 and following[0]["class"] == "ReLU"
            tensors[following[0]["name"] if relu else spec["name"]] = ADD
    return tensors


def quantized_tensors(model) -> list[str]:
    """Names of the layers whose outputs the quantized model quantizes, in order."""
    return list(quantized_tensors_of(layer_specs(model)))


def rebuild_model(model, transform):
    """Rebuild a model layer by layer in its topological order; `transform(layer, x)`
    returns the new output of each layer from its new input `x` (a list for a layer that
    reads several, such as Add). A layer that returns `x` unchanged (a dropped BN) passes
    its input on to its readers."""
    import keras

    inputs = keras.Input(shape=model.input_shape[1:], name=model.layers[0].name)
    tensors = {model.layers[0].name: inputs}
    for layer in model.layers[1:]:
        sources = [tensors[name] for name in inbound_names(layer)]
        tensors[layer.name] = transform(layer, sources[0] if len(sources) == 1 else sources)
    output = model.outputs[0]._keras_history.operation.name
    return keras.Model(inputs, tensors[output], name=model.name)


def fold_weights(specs: list[dict], weights: dict, layers=None) -> dict:
    """{kernel layer: {"kernel", "bias"}} with every BatchNorm folded in (Eq. 3), numpy only.

    `specs` and `weights` as layer_specs / layer_weights give them (or layerfiles.load_layers
    reads them back); `layers` defaults to kernel_layers_of(specs).
    """
    epsilons = {spec["name"]: spec.get("epsilon") for spec in specs}
    folded: dict[str, dict[str, np.ndarray]] = {}
    for layer in layers or kernel_layers_of(specs):
        kernel, *bias = weights[layer.name]
        bias = bias[0] if bias else None
        if layer.batchnorm:
            gamma, beta, mean, variance = weights[layer.batchnorm]
            kernel, bias = fold_batchnorm(
                kernel, bias, gamma, beta, mean, variance, epsilons[layer.batchnorm], layer.kind
            )
        folded[layer.name] = {"kernel": kernel, "bias": bias}
    return folded


def folded_model(model, folded: dict):
    """A BatchNorm-free copy of `model` carrying the `folded` weights ({layer: {"kernel",
    "bias"}}, from fold_weights): kernels keep their layer names, a kernel layer followed
    by BN gains a bias."""
    import keras

    def transform(layer, x):
        if isinstance(layer, keras.layers.BatchNormalization):
            return x
        config = layer.get_config()
        if layer.name in folded:
            config["use_bias"] = True
        return layer.__class__.from_config(config)(x)

    rebuilt = rebuild_model(model, transform)
    for name, w in folded.items():
        rebuilt.get_layer(name).set_weights([w["kernel"], w["bias"]])
    return rebuilt


def fold_model(model):
    """(folded_model, folded weights) of a Keras model: fold_weights, then folded_model."""
    folded = fold_weights(layer_specs(model), layer_weights(model))
    return folded_model(model, folded), folded


def capture_model(model, names: list[str]):
    """A model with the same input whose outputs are the named layers' outputs."""
    import keras

    return keras.Model(model.input, [model.get_layer(n).output for n in names])


class FoldingError(RuntimeError):
    """A folded model does not compute what the model it was folded from computes."""


def check_folding(logits: np.ndarray, folded_logits: np.ndarray, rtol: float = 1e-3) -> float:
    """Max |difference| of the folded network's logits against the trained model's on the
    same images, relative to the logits' scale; FoldingError above `rtol`.

    Folding only reorders float32 arithmetic: measured differences are about 2e-6 of the
    logits' scale, a wrong fold (a BN statistic misplaced) gives differences of order 1.
    """
    original, refolded = np.asarray(logits), np.asarray(folded_logits)
    # equal values (also infinities and NaNs of an exploded network) differ by 0
    same = (original == refolded) | (np.isnan(original) & np.isnan(refolded))
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf where `same` holds
        difference = np.where(same, 0.0, np.abs(original - refolded))
    finite = np.abs(original[np.isfinite(original)])
    scale = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    relative = float(difference.max()) / scale
    if not relative <= rtol:
        raise FoldingError(
            f"the BN-folded model's logits differ from the trained model's by {relative:.3g} "
            f"of their scale {scale:.3g} (tolerance {rtol:g}): folding is wrong for this model"
        )
    return relative


class LayerDynamics:
    """Per-layer statistics of a model on a fixed probe batch, recorded once per epoch.

    Built once per training run, then called after each epoch: weight and BN-folded weight
    ranges, folded precision, and the clipped activation range and precision of each kernel
    layer's output on the probe images. The forward pass and the per-channel minima and
    maxima run as one compiled TensorFlow function; NumPy takes only the percentiles.
    """

    def __init__(self, model, probe_images: np.ndarray, percentile: float):
        import tensorflow as tf

        self.model = model
        self.specs = layer_specs(model)
        self.layers = kernel_layers_of(self.specs)
        self.probe = tf.constant(probe_images, dtype="float32")
        self.percentile = percentile
        capture = capture_model(model, [k.trained_output for k in self.layers])

        @tf.function
        def forward(images):
            outputs = tf.nest.flatten(capture(images, training=False))
            return [
                (
                    a,
                    tf.reduce_min(a, axis=range(a.shape.rank - 1)),
                    tf.reduce_max(a, axis=range(a.shape.rank - 1)),
                )
                for a in outputs
            ]

        self.forward = forward

    def __call__(self, epoch: int) -> list[dict]:
        from quantinit.stats import (
            average_channel_precision,
            clipped_channel_precision,
            percentile_range,
            tensor_range,
        )

        weights = layer_weights(self.model)
        folded = fold_weights(self.specs, weights, self.layers)
        rows = []
        for layer, (activation, channel_min, channel_max) in zip(
            self.layers, self.forward(self.probe), strict=True
        ):
            kernel = weights[layer.name][0]
            folded_kernel = folded[layer.name]["kernel"]
            w_lo, w_hi = tensor_range(kernel)
            f_lo, f_hi = tensor_range(folded_kernel)
            a_lo, a_hi = percentile_range(activation.numpy(), self.percentile)
            rows.append(
                {
                    "epoch": epoch,
                    "layer": layer.name,
                    "order": layer.order,
                    "kind": layer.kind,
                    "weight_min": w_lo,
                    "weight_max": w_hi,
                    "weight_range": w_hi - w_lo,
                    "folded_weight_range": f_hi - f_lo,
                    "folded_weight_precision": average_channel_precision(
                        folded_kernel, channel_axis(layer.kind)
                    ),
                    "activation_range": a_hi - a_lo,
                    "activation_precision": clipped_channel_precision(
                        channel_min.numpy(), channel_max.numpy(), a_lo, a_hi
                    ),
                }
            )
        return rows
