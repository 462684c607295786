"""The simulated quantized network as one LiteRT model, so that the analysis stages run it
without TensorFlow.

`build_engine` (TensorFlow) converts an architecture's BN-folded network to a float TFLite
model whose inputs are the images and one fake-quant row per quantized tensor
(analysis.quantized_tensors_of); it outputs the class probabilities and every quantized
tensor before and after its fake-quant step. Its kernels and biases are constants, converted
from random placeholders; the manifest records which flatbuffer buffer holds each one and in
which layout, and `Engine.set_weights` writes a cell's weights there (through the
flatbuffer schema of `ai_edge_litert`). Constants, not inputs, because LiteRT's XNNPACK
delegate runs convolutions with constant filters only: about 5 times faster at the quick
preset. So one engine serves every cell of an architecture (rule build_engine), and
switching a kernel between its float and fake-quantized values, or a tensor's fake-quant on
and off, is a matter of what is written or fed in: calibration, the simulated quint8 model,
its weight-only and activation-only halves and the per-layer sensitivity runs all use it.

A fake-quant row is ``[nudged_min, nudged_max, scale, quant_zero, on]``
(quantization.fake_quant_row) and the engine computes

    q = floor((clamp(x, nudged_min, nudged_max) - nudged_min) / scale - quant_zero + 0.5) * scale
    y = q if on else x

with TFLite's elementwise ops, in TensorFlow's FakeQuantWithMinMaxVars order: bit for bit
quantization.fake_quant_reference (tested). `Engine` runs it with LiteRT (`ai_edge_litert`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ENGINE_FORMAT = 1
PROBABILITIES = "probabilities"
QUANT_SUFFIX = "_quant"  # output "<tensor>_quant": the tensor after its fake-quant step
QUANTIZER_COLUMNS = ("nudged_min", "nudged_max", "scale", "quant_zero", "on")
# A row that leaves its tensor float (on = 0); its range is any valid one.
OFF_ROW = (0.0, 1.0, 1.0, 0.0, 0.0)
BUILD_CHECK_RTOL = 1e-4  # engine vs Keras on random images at build time (measured ~1e-6)


class EngineError(ValueError):
    """An engine does not fit the network it is asked to run."""


def _layer_op(layer):
    """The TensorFlow computation of one layer of a BN-free Keras network, as f(inputs,
    kernel, bias): the layer's own config decides strides, padding and the like."""
    import tensorflow as tf

    name, config = type(layer).__name__, layer.get_config()
    if config.get("activation", "linear") != "linear":
        raise EngineError(f"layer {layer.name}: a fused activation is not supported")
    if config.get("data_format", "channels_last") != "channels_last":
        raise EngineError(f"layer {layer.name}: only channels_last is supported")
    if name == "InputLayer":
        return lambda x, k, b: x
    if name == "Rescaling":
        scale, offset = np.float32(config["scale"]), np.float32(config["offset"])
        return lambda x, k, b: x * scale + offset
    if name in ("Conv2D", "DepthwiseConv2D"):
        strides = [1, *config["strides"], 1]
        padding = config["padding"].upper()
        dilations = list(config["dilation_rate"])
        if name == "Conv2D":
            if config.get("groups", 1) != 1:
                raise EngineError(f"layer {layer.name}: grouped convolutions are not supported")
            return lambda x, k, b: tf.nn.conv2d(x, k, strides, padding, dilations=dilations) + b
        return lambda x, k, b: (
            tf.nn.depthwise_conv2d(x, k, strides, padding, dilations=dilations) + b
        )
    if name == "Dense":
        return lambda x, k, b: tf.matmul(x, k) + b
    if name == "ReLU":
        if config["max_value"] is not None or config["negative_slope"] or config["threshold"]:
            raise EngineError(f"layer {layer.name}: only the plain ReLU is supported")
        return lambda x, k, b: tf.nn.relu(x)
    if name == "MaxPooling2D":
        size, strides = list(config["pool_size"]), list(config["strides"])
        padding = config["padding"].upper()
        return lambda x, k, b: tf.nn.max_pool2d(x, size, strides, padding)
    if name == "Flatten":
        return lambda x, k, b: tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
    if name == "Add":
        return lambda xs, k, b: tf.add_n(xs)
    if name == "Softmax":
        return lambda x, k, b: tf.nn.softmax(x, axis=config["axis"])
    raise EngineError(f"layer {layer.name}: the engine has no op for {name} layers")


def fake_quant_graph(x, row):
    """The fake-quant row `row` applied to `x` in TensorFlow ops (module docstring)."""
    import tensorflow as tf

    nudged_min, nudged_max, scale, quant_zero, on = (row[i] for i in range(5))
    clamped = tf.minimum(tf.maximum(x, nudged_min), nudged_max)
    quantized = tf.floor((clamped - nudged_min) / scale - quant_zero + 0.5) * scale
    return tf.where(on > 0.5, quantized, x)


# How the converter stores a Keras weight (numpy layout -> flatbuffer layout).
LAYOUTS = {
    "identity": lambda w: w,
    "ohwi": lambda w: np.transpose(w, (3, 0, 1, 2)),  # conv HWIO, depthwise HWC1 -> 1HWC
    "transposed": lambda w: np.transpose(w),  # dense (in, out) -> FULLY_CONNECTED (out, in)
}


def build_engine(folded_model) -> tuple[bytes, dict]:
    """(TFLite flatbuffer, manifest) of the engine of a BN-free Keras network
    (analysis.folded_model). The manifest (JSON-serialisable) names the outputs in the
    flatbuffer's order, the quantized tensors with their kinds, the kernel layers with their
    weight shapes, and where each weight is stored (`weights`: {"<layer>/kernel" |
    "<layer>/bias": {"buffer", "layout", "shape"}}). Checks the engine against the Keras
    network on random images with the network's own weights; EngineError where they differ."""
    import tensorflow as tf

    from quantinit.analysis import inbound_names, kernel_layers, layer_specs, quantized_tensors_of
    from quantinit.tflite import quiet_output

    tensors = quantized_tensors_of(layer_specs(folded_model))
    layers = []
    placeholders = {}  # random, so that every weight's buffer is unique and can be found
    rng = np.random.default_rng(0)
    for k in kernel_layers(folded_model):
        kernel, bias = folded_model.get_layer(k.name).get_weights()
        layers.append({"name": k.name, "kind": k.kind, "output": k.output})
        for key, value in (("kernel", kernel), ("bias", bias)):
            placeholders[f"{k.name}/{key}"] = rng.uniform(-1, 1, value.shape).astype(np.float32)
    ops = [(layer, _layer_op(layer), inbound_names(layer)) for layer in folded_model.layers]
    position = {name: i for i, name in enumerate(tensors)}
    output = folded_model.outputs[0]._keras_history.operation.name
    constants = {key: tf.constant(value) for key, value in placeholders.items()}

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, *folded_model.input_shape[1:]), tf.float32, name="images"),
            tf.TensorSpec((len(tensors), len(QUANTIZER_COLUMNS)), tf.float32, name="quantizers"),
        ]
    )
    def forward(images, quantizers):
        values, before, after = {}, [], []
        for layer, op, sources in ops:
            inputs = [values[s] for s in sources] or [images]
            x = op(
                inputs[0] if len(inputs) == 1 else inputs,
                constants.get(f"{layer.name}/kernel"),
                constants.get(f"{layer.name}/bias"),
            )
            if layer.name in position:
                before.append(x)
                x = fake_quant_graph(x, quantizers[position[layer.name]])
                after.append(x)
            values[layer.name] = x
        return [values[output], *before, *after]

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [forward.get_concrete_function()], forward
    )
    with quiet_output():
        flatbuffer = bytes(converter.convert())
    manifest = {
        "format": ENGINE_FORMAT,
        "outputs": [PROBABILITIES, *tensors, *(f"{t}{QUANT_SUFFIX}" for t in tensors)],
        "tensors": list(tensors.items()),
        "layers": layers,
        "weights": _locate_weights(flatbuffer, placeholders),
    }
    _check_against_keras(flatbuffer, manifest, folded_model)
    return flatbuffer, manifest


def _buffers(flatbuffer):
    """The model's constant buffers as writable float32 views into `flatbuffer` (a
    bytearray), by buffer index (the TFLite flatbuffer schema of ai_edge_litert)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    views = {}
    for index in range(model.BuffersLength()):
        buffer = model.Buffers(index)
        if buffer.DataLength() and buffer.DataLength() % 4 == 0:
            views[index] = buffer.DataAsNumpy().view(np.float32)
    return views


def _locate_weights(flatbuffer: bytes, placeholders: dict) -> dict:
    """{weight: {"buffer", "layout", "shape"}}: the one buffer holding each placeholder in
    one of LAYOUTS; EngineError where none or several do."""
    buffers = _buffers(bytearray(flatbuffer))
    located = {}
    for key, value in placeholders.items():
        found = [
            (index, layout)
            for layout, transform in LAYOUTS.items()
            if layout == "identity" or value.ndim == {"ohwi": 4, "transposed": 2}[layout]
            for index, view in buffers.items()
            if view.size == value.size and np.array_equal(view, transform(value).ravel())
        ]
        if len({index for index, _ in found}) != 1:
            raise EngineError(
                f"{key}: {len(found)} buffers of the converted engine hold it in a known layout "
                f"({', '.join(LAYOUTS)}); this converter stores weights in a way this version "
                "does not know"
            )
        index, layout = found[0]
        located[key] = {"buffer": index, "layout": layout, "shape": list(value.shape)}
    return located


def _check_against_keras(flatbuffer: bytes, manifest: dict, folded_model) -> None:
    """EngineError unless the engine, all float and carrying the network's own weights,
    computes what `folded_model` computes on random images."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, *folded_model.input_shape[1:])).astype(np.float32)
    folded = {
        e["name"]: dict(
            zip(("kernel", "bias"), folded_model.get_layer(e["name"]).get_weights(), strict=True)
        )
        for e in manifest["layers"]
    }
    engine = Engine(flatbuffer, manifest, batch_size=len(images))
    engine.set_weights(folded_weights(folded))
    got = engine.predict(images, engine.quantizers({}))
    expected = np.asarray(folded_model.predict(images, verbose=0))
    difference = float(np.max(np.abs(got - expected)))
    if not difference <= BUILD_CHECK_RTOL:
        raise EngineError(
            f"the engine's probabilities differ from the Keras network's by {difference:.3g} "
            f"(tolerance {BUILD_CHECK_RTOL:g}): an op is mapped wrongly"
        )


def folded_weights(folded: dict) -> dict[str, np.ndarray]:
    """{"<layer>/kernel", "<layer>/bias": array} of {layer: {"kernel", "bias"}} weights (as
    layerfiles.load_folded gives them): what `Engine.set_weights` takes."""
    return {
        f"{name}/{key}": np.asarray(w[key], dtype=np.float32)
        for name, w in folded.items()
        for key in ("kernel", "bias")
    }


def save_engine(flatbuffer: bytes, manifest: dict, model_path, manifest_path) -> None:
    """Write an engine's flatbuffer and manifest, each atomically."""
    from quantinit.io import atomic_path

    with atomic_path(model_path) as tmp:
        Path(tmp).write_bytes(flatbuffer)
    with atomic_path(manifest_path) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1) + "\n")


# Images per invoke. Small batches keep the activations in cache: loading the weights and
# running 1,000 images took 0.04-0.06 s at 16 to 64 images per invoke, 0.07-0.12 s at 256
# and 0.27 s at 1,000 (quick preset networks, one thread).
BATCH_SIZE = 32


class Engine:
    """An engine (build_engine) run by LiteRT, `batch_size` images per invoke (the last
    batch zero-padded), with `num_threads` threads. `set_weights` before the first run."""

    def __init__(
        self,
        flatbuffer: bytes,
        manifest: dict,
        num_threads: int | None = None,
        batch_size: int = BATCH_SIZE,
    ):
        if manifest.get("format") != ENGINE_FORMAT:
            raise EngineError(
                f"engine format {manifest.get('format')}, this version reads {ENGINE_FORMAT}: "
                "rebuild it (rule build_engine)"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.tensors: dict[str, str] = dict(manifest["tensors"])
        self.layers: list[dict] = manifest["layers"]
        self.output_names: list[str] = manifest["outputs"]
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._weights = manifest["weights"]
        self._flatbuffer = bytearray(flatbuffer)
        self._buffers = _buffers(self._flatbuffer)
        self._interpreter = None

    @classmethod
    def load(cls, model_path, manifest_path, **kwargs) -> Engine:
        manifest = json.loads(Path(manifest_path).read_text())
        return cls(Path(model_path).read_bytes(), manifest, **kwargs)

    def check_network(self, layers, tensors: dict) -> None:
        """EngineError unless `layers` (KernelLayer-like: name, kind) and `tensors` ({tensor:
        kind}) are the engine's: a cell's network must be the one the engine was built for."""
        mine = [(e["name"], e["kind"]) for e in self.layers]
        theirs = [(layer.name, layer.kind) for layer in layers]
        if mine != theirs or list(self.tensors.items()) != list(tensors.items()):
            raise EngineError(
                f"the engine was built for kernel layers {mine} and quantized tensors "
                f"{list(self.tensors)}, the cell has {theirs} and {list(tensors)}: rebuild "
                "the engine for this network (rule build_engine)"
            )

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Write every kernel and bias ({"<layer>/kernel" | "<layer>/bias": array}, as
        folded_weights gives them; float or fake-quantized) into the engine."""
        missing = set(self._weights) - set(weights)
        if missing:
            raise EngineError(f"no values for {sorted(missing)}")
        for key, where in self._weights.items():
            value = np.asarray(weights[key], dtype=np.float32)
            if list(value.shape) != where["shape"]:
                raise EngineError(
                    f"{key} has shape {list(value.shape)}, the engine's {where['shape']}"
                )
            self._buffers[where["buffer"]][:] = LAYOUTS[where["layout"]](value).ravel()
        self._interpreter = None  # the next run loads the model with these weights

    def _loaded(self):
        from quantinit.tflite import make_interpreter

        if self._interpreter is None:
            interpreter = make_interpreter(bytes(self._flatbuffer), self.num_threads)
            inputs = interpreter.get_input_details()
            self._inputs = {"images": inputs[0]["index"], "quantizers": inputs[1]["index"]}
            self._shape = tuple(int(n) for n in inputs[0]["shape"][1:])
            # outputs are named Identity, Identity_1, ... in the order forward returns them
            details = sorted(
                interpreter.get_output_details(),
                key=lambda d: int(d["name"].rpartition("_")[2]) if "_" in d["name"] else 0,
            )
            self._outputs = dict(zip(self.output_names, (d["index"] for d in details), strict=True))
            interpreter.resize_tensor_input(self._inputs["images"], [self.batch_size, *self._shape])
            interpreter.allocate_tensors()
            self._interpreter = interpreter
        return self._interpreter

    def quantizers(self, rows: dict[str, tuple]) -> np.ndarray:
        """The quantizers input: each tensor's row from `rows` ({tensor: row}), OFF_ROW for
        the others."""
        unknown = set(rows) - set(self.tensors)
        if unknown:
            raise EngineError(f"no quantized tensors {sorted(unknown)} in {list(self.tensors)}")
        return np.array([rows.get(t, OFF_ROW) for t in self.tensors], dtype=np.float32)

    def _invoked(self, images, quantizers, outputs: list[str]) -> Iterator[tuple[int, int]]:
        """Invoke once per batch of `images`; yields (first image, count) of each batch while
        the interpreter holds its outputs."""
        unknown = set(outputs) - set(self.output_names)
        if unknown:
            raise EngineError(f"no outputs {sorted(unknown)}; the engine has {self.output_names}")
        interpreter = self._loaded()
        images = np.asarray(images, dtype=np.float32)
        if images.shape[1:] != self._shape:
            raise EngineError(f"images of shape {images.shape[1:]}, the engine's {self._shape}")
        interpreter.set_tensor(self._inputs["quantizers"], np.asarray(quantizers, np.float32))
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            count = len(chunk)
            if count < self.batch_size:
                padding = np.zeros((self.batch_size - count, *self._shape), np.float32)
                chunk = np.concatenate([chunk, padding])
            interpreter.set_tensor(self._inputs["images"], np.ascontiguousarray(chunk))
            interpreter.invoke()
            yield start, count

    def run(
        self, images: np.ndarray, quantizers: np.ndarray, outputs: list[str]
    ) -> Iterator[dict[str, np.ndarray]]:
        """{output: array} for each batch of `images` (N, H, W, C) in 0..255, with the
        weights set and `quantizers` (`quantizers`) fed."""
        for _, count in self._invoked(images, quantizers, outputs):
            # get_tensor copies: the next invoke does not overwrite what was yielded
            yield {
                name: self._interpreter.get_tensor(self._outputs[name])[:count] for name in outputs
            }

    def collect(self, images, quantizers, outputs: list[str]) -> dict[str, np.ndarray]:
        """{output: array over all `images`}: `run`'s batches, copied once into place."""
        if len(images) == 0:
            raise ValueError("need at least one image")
        collected: dict[str, np.ndarray] = {}
        for start, count in self._invoked(images, quantizers, outputs):
            for name in outputs:
                view = self._interpreter.tensor(self._outputs[name])()  # valid until next invoke
                if name not in collected:
                    collected[name] = np.empty((len(images), *view.shape[1:]), view.dtype)
                collected[name][start : start + count] = view[:count]
                del view  # LiteRT refuses to invoke while a view of its buffers is alive
        return collected

    def predict(self, images, quantizers) -> np.ndarray:
        """The class probabilities on `images`."""
        return self.collect(images, quantizers, [PROBABILITIES])[PROBABILITIES]


class QuantizedNetwork:
    """One cell's simulated quantized network on an `Engine`, every quantization switchable:
    each kernel between its float and fake-quantized values (quantization.fake_quantize_kernel
    with the scheme's granularity and symmetry) and each quantized tensor's fake-quant on or
    off (per tensor: quantization.activation_range of its calibrated `bounds`, {tensor: (lo,
    hi)}). Biases stay float32 (int32-equivalent precision); the softmax runs in float on the
    dequantized logits.

    `configure(kernels, tensors)` quantizes exactly those kernels and tensors. For the
    per-layer analyses `quantize(switches)` names switches instead: a kernel layer's switch
    is its kernel and its output tensor together, and a tensor no kernel layer owns (the
    input image "rescale", a residual Add's output) is a switch of its own. Every switch on
    is the simulated quantized model, every switch off the float (BN-folded) network.
    """

    def __init__(self, engine: Engine, folded: dict, bounds: dict, scheme: dict):
        from quantinit.quantization import activation_range, fake_quant_row, fake_quantize_kernel

        self.engine = engine
        self.layers = [SimpleNamespace(order=i, **e) for i, e in enumerate(engine.layers)]
        self._float = folded_weights(folded)
        self._quantized = dict(self._float)
        for layer in self.layers:
            key = f"{layer.name}/kernel"
            self._quantized[key] = fake_quantize_kernel(self._float[key], layer.kind, scheme)[0]
        missing = set(engine.tensors) - set(bounds)
        if missing:
            raise ValueError(f"no calibrated bounds for the quantized tensors {sorted(missing)}")
        activation_scheme = {**scheme, "granularity": "per_tensor"}
        self._rows = {
            t: fake_quant_row(activation_range(*bounds[t], activation_scheme))
            for t in engine.tensors
        }
        self._owner = {layer.output: layer.name for layer in self.layers}
        self.switches = list(dict.fromkeys(self._owner.get(t, t) for t in engine.tensors))
        self._kernels: set[str] | None = None
        self._on: list[str] = []
        self.configure()

    def configure(self, kernels=(), tensors=()) -> None:
        """Quantize exactly the named kernel layers' kernels and the named tensors."""
        kernels, tensors = set(kernels), set(tensors)
        unknown = (kernels - {layer.name for layer in self.layers}) | (tensors - set(self._rows))
        if unknown:
            raise ValueError(f"unknown kernel layers or tensors {sorted(unknown)}")
        if kernels != self._kernels:
            names = {key: key.partition("/")[0] for key in self._float}
            self.engine.set_weights(
                {
                    key: (self._quantized if names[key] in kernels else self._float)[key]
                    for key in self._float
                }
            )
            self._kernels = kernels
        self._quantizers = self.engine.quantizers({t: self._rows[t] for t in tensors})
        output = {layer.name: layer.output for layer in self.layers}
        self._on = [
            s
            for s in self.switches
            if (s in kernels and output[s] in tensors) or (s not in output and s in tensors)
        ]

    def configure_all(self, kernels: bool = True, tensors: bool = True) -> None:
        """Every kernel and/or every tensor quantized (both: the simulated quantized model)."""
        self.configure(
            [layer.name for layer in self.layers] if kernels else (),
            list(self._rows) if tensors else (),
        )

    def quantize(self, switches=()) -> None:
        """Quantize exactly the named switches (kernel layers and/or tensors of their own)."""
        switches = set(switches)
        unknown = switches - set(self.switches)
        if unknown:
            raise ValueError(f"unknown switches {sorted(unknown)}; known: {self.switches}")
        self.configure(
            [layer.name for layer in self.layers if layer.name in switches],
            [t for t in self._rows if self._owner.get(t, t) in switches],
        )

    def quantize_all(self) -> None:
        self.quantize(self.switches)

    def activation_scale(self, tensor: str) -> float:
        """The nudged quantization step of a tensor's activation range."""
        return float(self._rows[tensor][2])

    @property
    def quantized(self) -> list[str]:
        """The switches now on, in network order."""
        return list(self._on)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities under the current configuration."""
        return self.engine.predict(images, self._quantizers)

    def predict_with_layers(self, images: np.ndarray, layers=None) -> tuple[np.ndarray, dict]:
        """(class probabilities, {kernel layer: its output tensor after its fake-quant step,
        the float tensor where that quantization is off}) under the current configuration,
        in one pass; `layers`: the names of those wanted (default: all)."""
        names = {
            layer.name: f"{layer.output}{QUANT_SUFFIX}"
            for layer in self.layers
            if layers is None or layer.name in layers
        }
        outputs = self.engine.collect(images, self._quantizers, [PROBABILITIES, *names.values()])
        return outputs[PROBABILITIES], {layer: outputs[name] for layer, name in names.items()}

    def run(self, images: np.ndarray, outputs: list[str]) -> Iterator[dict[str, np.ndarray]]:
        """Engine.run under the current configuration."""
        return self.engine.run(images, self._quantizers, outputs)
