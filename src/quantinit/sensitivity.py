"""Where quantization hurts: per-tensor quantization error and per-layer sensitivity.

Both work on the BN-folded float model (analysis.fold_model) with the calibrated activation
bounds ({quantized tensor: (lo, hi)}) and the quantization scheme of the simulated quint8
model (analysis.build_quantized_model).

Per-tensor error (`quantization_error_table`), as TFLite's QuantizationDebugger: in the
simulated quantized model, the output of each quantized tensor's layer X (computed from
quantized inputs and quantized kernels, before its own fake-quant) is compared with the
output of its fake-quant layer "X_quant". The error therefore holds rounding and clipping of
that tensor only, not the error propagated from earlier layers. Statistics are accumulated
over batches (running sums in float64 and a running max), never holding all activations.

Per-kernel error (`weight_error_table`): the folded kernel against its fake-quantized kernel.
For per-channel schemes the step (`weight_scale`) is the mean of the channel steps, so
`weight_rmse_over_scale` = rmse over the whole kernel / mean channel step.

`rmse_over_scale` is rmse / quantization step: 1/sqrt(12) = 0.289 for pure rounding noise of
values spread over many steps, less for values sitting on the grid (e.g. zeros after a ReLU,
or an 8-bit image), more when values are clipped outside the range.

SQNR per layer (`sqnr_table`), as ONNX Runtime's QDQ debugging and PyTorch's numeric suite
report it: 10 log10(sum x^2 / sum (x_q - x)^2) in dB of each kernel layer's quantized output
tensor x_q against the float model's x, summed over all images and elements. "local": only
that layer quantized (its kernel and output; its input is the float network's), so the
number is the layer's own error; "accumulated": the whole network quantized, so it holds
every earlier layer's error as well. No error gives +inf, a silent float tensor -inf.

Per-layer sensitivity (`sensitivity_table`) runs one switchable model
(`SwitchableQuantizedModel`): every fake-quant step can be turned on or off by a
non-trainable variable and every kernel can be swapped between its float and fake-quantized
values, so a single traced function serves every configuration. For each kernel layer,
"only" quantizes just that layer (its kernel and its output tensor) and "all_but" quantizes
everything except that layer. The input image quantization ("rescale") belongs to no kernel
layer: it is off in "only" runs and on in "all_but" runs, so "only" differs from the float
model, and "all_but" from the fully quantized model, by exactly that one layer.
Accuracies are in percent; QCE is against the float (folded) model's probabilities.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import pandas as pd

from quantinit.analysis import (
    build_quantized_model,
    capture_model,
    kernel_layers,
    layer_specs,
    quantized_tensors_of,
)
from quantinit.folding import channel_axis
from quantinit.quantization import activation_range, fake_quantize, nudged_range, weight_range
from quantinit.stats import qce
from quantinit.tables import accuracy, quantized_activation_bounds

UNIFORM_ROUNDING_RMSE = 1 / np.sqrt(12)  # rmse / step of rounding uniformly spread values


class ErrorAccumulator:
    """Running squared, absolute and maximum error between float values and their quantized ones.

    `update(x, x_q)` adds a batch (any shape; float64 sums), `result(scale)` gives mse, mae,
    max_abs, scale and rmse_over_scale = sqrt(mse) / scale.
    """

    def __init__(self):
        self.count = 0
        self.sum_squared = 0.0
        self.sum_abs = 0.0
        self.max_abs = 0.0

    def update(self, x, x_q) -> None:
        diff = np.asarray(x_q, dtype=np.float32) - np.asarray(x, dtype=np.float32)
        diff = np.abs(diff.astype(np.float64))
        if diff.size == 0:
            return
        self.count += diff.size
        self.sum_squared += float(np.sum(diff * diff))
        self.sum_abs += float(np.sum(diff))
        self.max_abs = max(self.max_abs, float(diff.max()))

    def result(self, scale: float) -> dict:
        if self.count == 0:
            raise ValueError("no values were accumulated")
        mse = self.sum_squared / self.count
        return {
            "mse": mse,
            "mae": self.sum_abs / self.count,
            "max_abs": self.max_abs,
            "scale": float(scale),
            "rmse_over_scale": float(np.sqrt(mse) / scale),
        }


def error_stats(x, x_q, scale: float) -> dict:
    """mse, mae, max_abs, scale and rmse_over_scale of x_q - x in one go."""
    accumulator = ErrorAccumulator()
    accumulator.update(x, x_q)
    return accumulator.result(scale)


def _activation_qrange(bounds: dict, name: str, scheme: dict):
    """The per-tensor QuantRange build_quantized_model uses for the tensor `name`."""
    lo, hi = bounds[name]
    return activation_range(lo, hi, {**scheme, "granularity": "per_tensor"})


def _batched(model):
    """`model(x, training=False)` as one tf.function for any batch size (traced once)."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec])


def _batches(images: np.ndarray, batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, len(images), batch_size):
        yield np.asarray(images[start : start + batch_size], dtype=np.float32)


def quantization_error_table(
    folded_model, bounds: dict, scheme: dict, images: np.ndarray, batch_size: int = 256
) -> pd.DataFrame:
    """One row per quantized tensor: its own quantization error in the simulated quint8 model.

    Columns: tensor, order (position among the quantized tensors, the input image first), kind
    (input | conv | depthwise | pointwise | dense), mse, mae, max_abs (of X_quant - X over all
    images and elements), scale (the nudged activation step) and rmse_over_scale.
    """
    if len(images) == 0:
        raise ValueError("need at least one image")
    kinds = quantized_tensors_of(layer_specs(folded_model))
    names = [name for name in kinds if name in bounds]
    quantized = build_quantized_model(folded_model, bounds, scheme)
    probe = _batched(
        capture_model(quantized, [n for name in names for n in (name, f"{name}_quant")])
    )
    accumulators = {name: ErrorAccumulator() for name in names}
    for batch in _batches(images, batch_size):
        outputs = probe(batch)
        for index, name in enumerate(names):
            accumulators[name].update(outputs[2 * index], outputs[2 * index + 1])
    rows = []
    for order, name in enumerate(kinds):
        if name not in accumulators:
            continue
        scale = float(nudged_range(*_activation_qrange(bounds, name, scheme))[2])
        rows.append(
            {"tensor": name, "order": order, "kind": kinds[name]} | accumulators[name].result(scale)
        )
    return pd.DataFrame(rows)


def _quantized_kernel(kernel: np.ndarray, kind: str, scheme: dict):
    """(fake-quantized kernel, its QuantRange), exactly as build_quantized_model makes them."""
    axis = channel_axis(kind)
    qrange = weight_range(kernel, scheme, axis)
    per_channel = scheme["granularity"] == "per_channel"
    kernel_q = fake_quantize(kernel, *qrange, channel_axis=axis if per_channel else None)
    return np.asarray(kernel_q), qrange


def weight_error_table(folded_model, scheme: dict) -> pd.DataFrame:
    """One row per kernel layer: the folded kernel against its fake-quantized kernel.

    Columns: layer, order, kind, weight_mse, weight_mae, weight_max_abs, weight_scale (the
    nudged step; per-channel schemes: the mean of the channel steps) and
    weight_rmse_over_scale (rmse over the whole kernel / weight_scale).
    """
    rows = []
    for layer in kernel_layers(folded_model):
        kernel = folded_model.get_layer(layer.name).get_weights()[0]
        kernel_q, qrange = _quantized_kernel(kernel, layer.kind, scheme)
        scale = float(np.mean(nudged_range(*qrange)[2]))
        stats = error_stats(kernel, kernel_q, scale)
        rows.append(
            {"layer": layer.name, "order": layer.order, "kind": layer.kind}
            | {f"weight_{key}": value for key, value in stats.items()}
        )
    return pd.DataFrame(rows)


@functools.cache
def _switched_fake_quant_class():
    """A Keras layer y = fake_quant(x) when its variable `on` is 1, y = x when it is 0."""
    import keras
    import tensorflow as tf

    class SwitchedFakeQuant(keras.layers.Layer):
        def __init__(self, qmin: float, qmax: float, bits: int, narrow_range: bool, **kwargs):
            super().__init__(**kwargs)
            self.qmin, self.qmax = float(qmin), float(qmax)
            self.bits, self.narrow_range = int(bits), bool(narrow_range)

        def build(self, input_shape):
            self.on = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="on", dtype="float32"
            )

        def call(self, x):
            quantized = tf.quantization.fake_quant_with_min_max_args(
                x, min=self.qmin, max=self.qmax, num_bits=self.bits, narrow_range=self.narrow_range
            )
            # tf.where, not x + on * (q - x): exactly q when on and exactly x when off
            return tf.where(self.on > 0.5, quantized, x)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return super().get_config() | {
                "qmin": self.qmin,
                "qmax": self.qmax,
                "bits": self.bits,
                "narrow_range": self.narrow_range,
            }

    return SwitchedFakeQuant


class SwitchableQuantizedModel:
    """The simulated quint8 model with every quantization switchable at run time.

    Switches are named by kernel layer (its kernel and its output tensor together) and
    INPUT_TENSOR ("rescale", the input image). `quantize(names)` turns exactly those on;
    `predict` runs one tf.function traced once for any switch setting and batch size
    (`tracing_count`). With every switch on it computes build_quantized_model's network,
    with every switch off the float model.
    """

    def __init__(self, folded_model, bounds: dict, scheme: dict):
        from quantinit.analysis import rebuild_model

        self.layers = kernel_layers(folded_model)
        kinds = {k.name: k.kind for k in self.layers}
        switch_of_tensor = {k.output: k.name for k in self.layers}
        switch_class = _switched_fake_quant_class()
        self._kernel_layers = {}  # {layer: the rebuilt Keras layer}
        self._kernels = {}  # {layer: (float kernel, fake-quantized kernel)}
        self._fake_quants = {}  # {switch: its SwitchedFakeQuant layer}
        self.switches: list[str] = []  # in network order

        def add_switch(name):
            if name not in self.switches:
                self.switches.append(name)

        def transform(layer, x):
            new = layer.__class__.from_config(layer.get_config())
            x = new(x)
            if layer.name in kinds:
                weights = layer.get_weights()
                new.set_weights(weights)
                kernel_q = _quantized_kernel(weights[0], kinds[layer.name], scheme)[0]
                self._kernel_layers[layer.name] = new
                self._kernels[layer.name] = (weights[0], kernel_q)
                add_switch(layer.name)
            if layer.name in bounds:
                qrange = _activation_qrange(bounds, layer.name, scheme)
                fake_quant = switch_class(
                    float(qrange.qmin_real),
                    float(qrange.qmax_real),
                    qrange.bits,
                    qrange.narrow_range,
                    name=f"{layer.name}_quant",
                )
                x = fake_quant(x)
                switch = switch_of_tensor.get(layer.name, layer.name)
                self._fake_quants[switch] = fake_quant
                add_switch(switch)
            return x

        self.model = rebuild_model(folded_model, transform)
        self._state = dict.fromkeys(self.switches, False)
        self._function = _batched(self.model)
        self._outputs = None  # built on first use: the kernel layers' quantized tensors

    def quantize(self, names: Iterable[str] = ()) -> None:
        """Quantize exactly the named switches (kernel layers and/or "rescale"), nothing else."""
        names = set(names)
        unknown = names - set(self.switches)
        if unknown:
            raise ValueError(f"unknown switches {sorted(unknown)}; known: {self.switches}")
        for name in self.switches:
            on = name in names
            if self._state[name] == on:
                continue
            if name in self._kernels:
                layer = self._kernel_layers[name]
                layer.set_weights([self._kernels[name][int(on)], *layer.get_weights()[1:]])
            if name in self._fake_quants:
                self._fake_quants[name].on.assign(1.0 if on else 0.0)
            self._state[name] = on

    def quantize_all(self) -> None:
        self.quantize(self.switches)

    @property
    def quantized(self) -> list[str]:
        """The switches now on, in network order."""
        return [name for name in self.switches if self._state[name]]

    @property
    def tracing_count(self) -> int:
        return self._function.experimental_get_tracing_count()

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The model's outputs (class probabilities) under the current switches."""
        outputs = [np.asarray(self._function(batch)) for batch in _batches(images, batch_size)]
        return np.concatenate(outputs)

    def layer_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """{kernel layer: its output tensor after its fake-quant step} on one batch under the
        current switches (the float tensor where the layer's switch is off)."""
        if self._outputs is None:
            names = [f"{k.output}_quant" for k in self.layers]
            self._outputs = _batched(capture_model(self.model, names))
        outputs = self._outputs(np.asarray(batch, dtype=np.float32))
        if len(self.layers) == 1:
            outputs = [outputs]
        return {k.name: np.asarray(o) for k, o in zip(self.layers, outputs, strict=True)}


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """10 log10(signal / noise); +inf without noise, -inf for noise on a silent signal."""
    if noise_power == 0:
        return float("inf")
    if signal_power == 0:
        return float("-inf")
    return float(10 * np.log10(signal_power / noise_power))


def sqnr_table(
    switchable: SwitchableQuantizedModel,
    images: np.ndarray,
    batch_size: int = 256,
    tflite=None,
) -> pd.DataFrame:
    """One row per kernel layer: layer, sqnr_local_db, sqnr_accumulated_db (module docstring)
    of `switchable`'s quantized output tensors on `images`, accumulated over batches.

    With `tflite` (a tflite.TFLiteLayers of the same network's int8 model; else NaN)
    tflite_sqnr_db, the deployed int8 model's layer output against the float network (to
    compare with sqnr_accumulated_db), and tflite_vs_simulated_sqnr_db, against the
    simulated quantized network's: low where the simulation and the deployed model disagree.
    If LiteRT fails on a batch (it refuses some degenerate models only when it runs them),
    those columns are NaN and tflite_error says why (else None).
    """
    layers = [k.name for k in switchable.layers]
    if tflite is not None and len(tflite.outputs) != len(layers):
        raise ValueError(
            f"the TFLite model has {len(tflite.outputs)} weighted ops ({tflite.op_names}), "
            f"the network {len(layers)} kernel layers ({layers})"
        )
    modes = ["local", "accumulated"] + (["tflite", "tflite_vs_simulated"] if tflite else [])
    tflite_error = None
    # every mode's signal is the float network's tensor but tflite_vs_simulated's
    signal_of = dict.fromkeys(modes, "float") | {"tflite_vs_simulated": "simulated"}
    signal = {(source, name): 0.0 for source in ("float", "simulated") for name in layers}
    noise = {(mode, name): 0.0 for mode in modes for name in layers}

    def add(mode, name, x_q, x):
        noise[mode, name] += float(np.sum(np.square(x_q.astype(np.float64) - x)))

    for batch in _batches(images, batch_size):
        switchable.quantize([])
        reference = switchable.layer_outputs(batch)
        switchable.quantize_all()
        simulated = switchable.layer_outputs(batch)
        deployed = {}
        if tflite:
            try:
                deployed = dict(zip(layers, tflite(batch), strict=True))
            except RuntimeError as error:  # LiteRT refuses some degenerate models at run time
                tflite, tflite_error = None, f"LiteRT could not run the int8 model: {error}"
                modes = ["local", "accumulated"]
        for name in layers:
            signal["float", name] += float(np.sum(np.square(reference[name], dtype=np.float64)))
            signal["simulated", name] += float(np.sum(np.square(simulated[name], dtype=np.float64)))
            add("accumulated", name, simulated[name], reference[name])
            if tflite:
                add("tflite", name, deployed[name], reference[name])
                add("tflite_vs_simulated", name, deployed[name], simulated[name])
        for name in layers:
            switchable.quantize([name])
            add("local", name, switchable.layer_outputs(batch)[name], reference[name])
    columns = {
        "local": "sqnr_local_db",
        "accumulated": "sqnr_accumulated_db",
        "tflite": "tflite_sqnr_db",
        "tflite_vs_simulated": "tflite_vs_simulated_sqnr_db",
    }
    return pd.DataFrame(
        [
            {"layer": name}
            | {column: np.nan for column in columns.values()}  # tflite's: NaN without one
            | {
                columns[mode]: sqnr_db(signal[signal_of[mode], name], noise[mode, name])
                for mode in modes
            }
            | {"tflite_error": tflite_error}
            for name in layers
        ]
    )


def sensitivity_table(
    folded_model,
    bounds: dict,
    scheme: dict,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 256,
    qce_epsilon: float = 1e-7,
    switchable: SwitchableQuantizedModel | None = None,
) -> pd.DataFrame:
    """One row per kernel layer: accuracy and QCE with only that layer, or all but it, quantized.

    Columns: layer, order, kind, only_accuracy, only_qce, all_but_accuracy, all_but_qce, the
    references fp32_accuracy, quint8_accuracy, quint8_qce, and only_drop = fp32_accuracy -
    only_accuracy, all_but_gain = all_but_accuracy - quint8_accuracy. Accuracies in percent;
    QCE in nats against the float model's probabilities. The input image is quantized in the
    all_but runs (and the quint8 reference), not in the only runs (module docstring).
    `switchable`: the SwitchableQuantizedModel of these arguments if already built.
    """
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    switchable = switchable or SwitchableQuantizedModel(folded_model, bounds, scheme)

    def run(names):
        switchable.quantize(names)
        p = switchable.predict(images, batch_size)
        return p, 100 * accuracy(p, labels)

    p_fp32, fp32_accuracy = run([])
    p_quint8, quint8_accuracy = run(switchable.switches)
    quint8_qce = qce(p_fp32, p_quint8, eps=qce_epsilon)
    rows = []
    for layer in switchable.layers:
        p_only, only_accuracy = run([layer.name])
        p_all_but, all_but_accuracy = run([s for s in switchable.switches if s != layer.name])
        rows.append(
            {
                "layer": layer.name,
                "order": layer.order,
                "kind": layer.kind,
                "only_accuracy": only_accuracy,
                "only_qce": qce(p_fp32, p_only, eps=qce_epsilon),
                "all_but_accuracy": all_but_accuracy,
                "all_but_qce": qce(p_fp32, p_all_but, eps=qce_epsilon),
                "fp32_accuracy": fp32_accuracy,
                "quint8_accuracy": quint8_accuracy,
                "quint8_qce": quint8_qce,
                "only_drop": fp32_accuracy - only_accuracy,
                "all_but_gain": all_but_accuracy - quint8_accuracy,
            }
        )
    return pd.DataFrame(rows)


def most_sensitive(sensitivity: pd.DataFrame, k: int = 3) -> list[str]:
    """The k layers whose quantization alone costs the most accuracy.

    Ranked by only_drop (fp32_accuracy - only_accuracy), largest first, ties broken by the
    larger only_qce; layers with unmeasured (NaN) values come last.
    """
    ranked = sensitivity.assign(
        _drop=sensitivity["fp32_accuracy"] - sensitivity["only_accuracy"]
    ).sort_values(["_drop", "only_qce"], ascending=False, na_position="last", kind="stable")
    return ranked["layer"].head(k).tolist()


def measure_sensitivity(
    folded,
    layers,
    quantization: pd.DataFrame,
    scheme: dict,
    images: np.ndarray,
    labels: np.ndarray,
    qce_epsilon: float,
    tflite_model: bytes = b"",
    no_tflite: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(per-layer quantization error with its SQNR, per-layer sensitivity with its rank, the
    three most sensitive layers) of the `folded` model on `images`: rule quant_sensitivity's
    stage. With `tflite_model` (the cell's int8 model) the error table also compares the
    deployed model layer by layer (sqnr_table); where there is none (`no_tflite` says why:
    quantinit.schemes.no_tflite_reason), or LiteRT cannot run it, those columns are empty
    and tflite_error says why."""
    bounds = quantized_activation_bounds(quantization)
    tensor_errors = quantization_error_table(folded, bounds, scheme, images).set_index("tensor")
    weight_errors = weight_error_table(folded, scheme).set_index("layer")
    switchable = SwitchableQuantizedModel(folded, bounds, scheme)
    tflite, tflite_error = None, no_tflite or "no TFLite model"
    if tflite_model:
        from quantinit.tflite import TFLiteLayers

        try:
            tflite, tflite_error = TFLiteLayers(tflite_model), None
        except (RuntimeError, ValueError) as error:
            tflite_error = f"LiteRT could not run the int8 model: {error}"
    sqnr = sqnr_table(switchable, images, tflite=tflite).set_index("layer")
    if tflite is None:  # else sqnr_table says whether LiteRT ran it
        sqnr["tflite_error"] = tflite_error
    errors = pd.DataFrame(
        [
            {
                "layer": layer.name,
                "order": layer.order,
                "kind": layer.kind,
                "activation": layer.output,
                **tensor_errors.loc[layer.output, ["mse", "mae", "max_abs", "scale"]].to_dict(),
                "rmse_over_scale": tensor_errors.loc[layer.output, "rmse_over_scale"],
                **sqnr.loc[layer.name].to_dict(),
                **weight_errors.loc[layer.name].drop(["order", "kind"]).to_dict(),
            }
            for layer in layers
        ]
    )
    table = sensitivity_table(
        folded, bounds, scheme, images, labels, qce_epsilon=qce_epsilon, switchable=switchable
    )
    ranked = most_sensitive(table, k=len(table))
    table["rank"] = table["layer"].map({name: i + 1 for i, name in enumerate(ranked)})
    top = table.set_index("layer").loc[ranked[:3]]
    most = [
        {"layer": name, "accuracy_drop": float(row.only_drop), "qce": float(row.only_qce)}
        for name, row in top.iterrows()
    ]
    return errors, table, most
