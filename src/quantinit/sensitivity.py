"""Where quantization hurts: per-tensor quantization error and per-layer sensitivity.

Both work on the simulated quantized network of one cell (engine.QuantizedNetwork: the
BN-folded network on the architecture's LiteRT engine, with the calibrated activation bounds
and the scheme), no TensorFlow needed.

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

Per-layer sensitivity (`sensitivity_table`) switches the network's quantization
(QuantizedNetwork.quantize): every fake-quant step on or off, every kernel float or
fake-quantized, one engine for every configuration. For each kernel layer,
"only" quantizes just that layer (its kernel and its output tensor) and "all_but" quantizes
everything except that layer. The input image quantization ("rescale") belongs to no kernel
layer: it is off in "only" runs and on in "all_but" runs, so "only" differs from the float
model, and "all_but" from the fully quantized model, by exactly that one layer.
Accuracies are in percent; QCE is against the float (folded) model's probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from quantinit.engine import QUANT_SUFFIX
from quantinit.quantization import fake_quantize_kernel, nudged_range
from quantinit.stats import qce
from quantinit.tables import accuracy

UNIFORM_ROUNDING_RMSE = 1 / np.sqrt(12)  # rmse / step of rounding uniformly spread values


def sum_of_squares(x) -> float:
    """sum(x^2) of a float32 array, summed in float64 (without a float64 copy of x)."""
    return float(np.sum(np.square(np.asarray(x, dtype=np.float32)), dtype=np.float64))


class ErrorAccumulator:
    """Running squared, absolute and maximum error between float values and their quantized ones.

    `update(x, x_q)` adds a batch (any shape; float32 differences, float64 sums),
    `result(scale)` gives mse, mae,
    max_abs, scale and rmse_over_scale = sqrt(mse) / scale.
    """

    def __init__(self):
        self.count = 0
        self.sum_squared = 0.0
        self.sum_abs = 0.0
        self.max_abs = 0.0

    def update(self, x, x_q) -> None:
        diff = np.abs(np.asarray(x_q, dtype=np.float32) - np.asarray(x, dtype=np.float32))
        if diff.size == 0:
            return
        self.count += diff.size
        self.sum_squared += sum_of_squares(diff)
        self.sum_abs += float(np.sum(diff, dtype=np.float64))
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


def _batches(images: np.ndarray, batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, len(images), batch_size):
        yield np.asarray(images[start : start + batch_size], dtype=np.float32)


def quantization_error_table(network, images: np.ndarray) -> pd.DataFrame:
    """One row per quantized tensor: its own quantization error in the simulated quint8
    model (`network`, an engine.QuantizedNetwork, fully quantized here).

    Columns: tensor, order (position among the quantized tensors, the input image first), kind
    (input | conv | depthwise | pointwise | dense | add), mse, mae, max_abs (of X_quant - X
    over all images and elements), scale (the nudged activation step) and rmse_over_scale.
    """
    if len(images) == 0:
        raise ValueError("need at least one image")
    kinds = network.engine.tensors
    network.quantize_all()
    outputs = [n for name in kinds for n in (name, f"{name}{QUANT_SUFFIX}")]
    accumulators = {name: ErrorAccumulator() for name in kinds}
    for batch in network.run(images, outputs):
        for name in kinds:
            accumulators[name].update(batch[name], batch[f"{name}{QUANT_SUFFIX}"])
    return pd.DataFrame(
        [
            {"tensor": name, "order": order, "kind": kind}
            | accumulators[name].result(network.activation_scale(name))
            for order, (name, kind) in enumerate(kinds.items())
        ]
    )


def weight_error_table(folded: dict, layers, scheme: dict) -> pd.DataFrame:
    """One row per kernel layer (`layers`: KernelLayer-like, name, order, kind): its folded
    kernel (`folded`: {layer: {"kernel", ...}}) against its fake-quantized kernel.

    Columns: layer, order, kind, weight_mse, weight_mae, weight_max_abs, weight_scale (the
    nudged step; per-channel schemes: the mean of the channel steps) and
    weight_rmse_over_scale (rmse over the whole kernel / weight_scale).
    """
    rows = []
    for layer in layers:
        kernel = folded[layer.name]["kernel"]
        kernel_q, qrange = fake_quantize_kernel(kernel, layer.kind, scheme)
        scale = float(np.mean(nudged_range(*qrange)[2]))
        stats = error_stats(kernel, kernel_q, scale)
        rows.append(
            {"layer": layer.name, "order": layer.order, "kind": layer.kind}
            | {f"weight_{key}": value for key, value in stats.items()}
        )
    return pd.DataFrame(rows)


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """10 log10(signal / noise); +inf without noise, -inf for noise on a silent signal."""
    if noise_power == 0:
        return float("inf")
    if signal_power == 0:
        return float("-inf")
    return float(10 * np.log10(signal_power / noise_power))


SQNR_COLUMNS = {
    "local": "sqnr_local_db",
    "accumulated": "sqnr_accumulated_db",
    "tflite": "tflite_sqnr_db",
    "tflite_vs_simulated": "tflite_vs_simulated_sqnr_db",
}


@dataclass
class SwitchRuns:
    """What `run_switches` measured: the class probabilities of every configuration
    (`probabilities`: {("float" | "quantized", None) | ("only" | "all_but", layer): (N,
    classes)}), the signal and noise powers of the SQNR (`signal`: {("float" |
    "simulated", layer): sum of squares}, `noise`: {(mode, layer): sum of squared errors}),
    the SQNR modes measured and why the TFLite ones are missing (`tflite_error`)."""

    layers: list
    probabilities: dict
    signal: dict
    noise: dict
    modes: list[str]
    tflite_error: str | None


def run_switches(network, images: np.ndarray, tflite=None, chunk_size: int = 1000) -> SwitchRuns:
    """Run every configuration the per-layer analyses need once over `images`, `chunk_size`
    images at a time: the float network, the fully quantized one, and for each kernel layer
    "only" that layer and "all_but" it quantized (`network`: an engine.QuantizedNetwork).
    Each configuration loads its weights into LiteRT once per chunk; a chunk's float and
    simulated layer outputs are held while its configurations run.

    With `tflite` (a tflite.TFLiteLayers of the same network's int8 model) the deployed
    model's layer outputs are compared as well. If LiteRT fails on a chunk (it refuses some
    degenerate models only when it runs them), those modes are dropped and tflite_error says
    why (else None).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if len(images) == 0:
        raise ValueError("need at least one image")
    layers = [k.name for k in network.layers]
    if tflite is not None and len(tflite.outputs) != len(layers):
        raise ValueError(
            f"the TFLite model has {len(tflite.outputs)} weighted ops ({tflite.op_names}), "
            f"the network {len(layers)} kernel layers ({layers})"
        )
    modes = ["local", "accumulated"] + (["tflite", "tflite_vs_simulated"] if tflite else [])
    tflite_error = None
    configurations = {("float", None): [], ("quantized", None): network.switches}
    configurations |= {("only", name): [name] for name in layers}
    configurations |= {
        ("all_but", name): [s for s in network.switches if s != name] for name in layers
    }
    probabilities = {config: [] for config in configurations}
    signal = {(source, name): 0.0 for source in ("float", "simulated") for name in layers}
    noise = {(mode, name): 0.0 for mode in modes for name in layers}

    def add(mode, name, x_q, x):
        noise[mode, name] += sum_of_squares(x_q - x)

    for chunk in _batches(images, chunk_size):
        outputs = {}
        for (kind, name), switches in configurations.items():
            network.quantize(switches)
            if kind == "all_but":
                probabilities[kind, name].append(network.predict(chunk))
            else:  # "only" compares just its own layer
                wanted = None if name is None else [name]
                p, outputs[kind, name] = network.predict_with_layers(chunk, wanted)
                probabilities[kind, name].append(p)
        reference, simulated = outputs["float", None], outputs["quantized", None]
        deployed = {}
        if tflite:
            try:
                deployed = dict(zip(layers, tflite(chunk), strict=True))
            except RuntimeError as error:  # LiteRT refuses some degenerate models at run time
                tflite, tflite_error = None, f"LiteRT could not run the int8 model: {error}"
                modes = ["local", "accumulated"]
        for name in layers:
            signal["float", name] += sum_of_squares(reference[name])
            signal["simulated", name] += sum_of_squares(simulated[name])
            add("accumulated", name, simulated[name], reference[name])
            add("local", name, outputs["only", name][name], reference[name])
            if tflite:
                add("tflite", name, deployed[name], reference[name])
                add("tflite_vs_simulated", name, deployed[name], simulated[name])
    return SwitchRuns(
        list(network.layers),
        {config: np.concatenate(p) for config, p in probabilities.items()},
        signal,
        noise,
        modes,
        tflite_error,
    )


def sqnr_table(runs: SwitchRuns) -> pd.DataFrame:
    """One row per kernel layer: layer, sqnr_local_db, sqnr_accumulated_db (module docstring)
    of the network's quantized output tensors, and with a TFLite model (else NaN)
    tflite_sqnr_db, the deployed int8 model's layer output against the float network (to
    compare with sqnr_accumulated_db), and tflite_vs_simulated_sqnr_db, against the
    simulated quantized network's: low where the simulation and the deployed model disagree;
    tflite_error. From `run_switches`' measurements."""
    # every mode's signal is the float network's tensor but tflite_vs_simulated's
    signal_of = dict.fromkeys(runs.modes, "float") | {"tflite_vs_simulated": "simulated"}
    return pd.DataFrame(
        [
            {"layer": layer.name}
            | {column: np.nan for column in SQNR_COLUMNS.values()}  # tflite's: NaN without one
            | {
                SQNR_COLUMNS[mode]: sqnr_db(
                    runs.signal[signal_of[mode], layer.name], runs.noise[mode, layer.name]
                )
                for mode in runs.modes
            }
            | {"tflite_error": runs.tflite_error}
            for layer in runs.layers
        ]
    )


def sensitivity_table(runs: SwitchRuns, labels: np.ndarray, qce_epsilon: float = 1e-7):
    """One row per kernel layer: accuracy and QCE with only that layer, or all but it, quantized.

    Columns: layer, order, kind, only_accuracy, only_qce, all_but_accuracy, all_but_qce, the
    references fp32_accuracy, quint8_accuracy, quint8_qce, and only_drop = fp32_accuracy -
    only_accuracy, all_but_gain = all_but_accuracy - quint8_accuracy. Accuracies in percent;
    QCE in nats against the float model's probabilities. The input image is quantized in the
    all_but runs (and the quint8 reference), not in the only runs (module docstring). From
    `run_switches`' probabilities on the images whose `labels` these are.
    """
    labels = np.asarray(labels).reshape(-1)
    p = runs.probabilities
    if len(labels) != len(p["float", None]):
        raise ValueError(f"{len(p['float', None])} images but {len(labels)} labels")

    def percent(probabilities):
        return 100 * accuracy(probabilities, labels)

    fp32_accuracy, quint8_accuracy = percent(p["float", None]), percent(p["quantized", None])
    quint8_qce = qce(p["float", None], p["quantized", None], eps=qce_epsilon)
    rows = []
    for layer in runs.layers:
        only_accuracy = percent(p["only", layer.name])
        all_but_accuracy = percent(p["all_but", layer.name])
        rows.append(
            {
                "layer": layer.name,
                "order": layer.order,
                "kind": layer.kind,
                "only_accuracy": only_accuracy,
                "only_qce": qce(p["float", None], p["only", layer.name], eps=qce_epsilon),
                "all_but_accuracy": all_but_accuracy,
                "all_but_qce": qce(p["float", None], p["all_but", layer.name], eps=qce_epsilon),
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
    network,
    folded: dict,
    scheme: dict,
    images: np.ndarray,
    labels: np.ndarray,
    qce_epsilon: float,
    tflite_model: bytes = b"",
    no_tflite: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(per-layer quantization error with its SQNR, per-layer sensitivity with its rank, the
    three most sensitive layers) of `network` (an engine.QuantizedNetwork of the `folded`
    weights under `scheme`) on `images`: rule quant_sensitivity's stage. With `tflite_model`
    (the cell's int8 model) the error table also compares the deployed model layer by layer
    (sqnr_table); where there is none (`no_tflite` says why:
    quantinit.schemes.no_tflite_reason), or LiteRT cannot run it, those columns are empty
    and tflite_error says why."""
    layers = network.layers
    tensor_errors = quantization_error_table(network, images).set_index("tensor")
    weight_errors = weight_error_table(folded, layers, scheme).set_index("layer")
    tflite, tflite_error = None, no_tflite or "no TFLite model"
    if tflite_model:
        from quantinit.tflite import TFLiteLayers

        try:
            tflite, tflite_error = TFLiteLayers(tflite_model), None
        except (RuntimeError, ValueError) as error:
            tflite_error = f"LiteRT could not run the int8 model: {error}"
    runs = run_switches(network, images, tflite=tflite)
    sqnr = sqnr_table(runs).set_index("layer")
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
    table = sensitivity_table(runs, labels, qce_epsilon=qce_epsilon)
    ranked = most_sensitive(table, k=len(table))
    table["rank"] = table["layer"].map({name: i + 1 for i, name in enumerate(ranked)})
    top = table.set_index("layer").loc[ranked[:3]]
    most = [
        {"layer": name, "accuracy_drop": float(row.only_drop), "qce": float(row.only_qce)}
        for name, row in top.iterrows()
    ]
    return errors, table, most
