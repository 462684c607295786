"""The per-cell Parquet files: their schemas, and writing them (the weight files, layers.npz
and weights.npz, are quantinit.layerfiles').

calibration.parquet:  one row per quantized tensor (its calibrated ranges).
quantization.parquet: one row per quantized tensor (its quantization parameters).
layerwise.parquet:    one row per kernel layer (weights, folded weights, activations).
metrics.parquet:      one row per cell (accuracies, QMSE, QCE, percent decrease).
dynamics.parquet:     one row per kernel layer and epoch (layerwise statistics in training).
Column meanings: docs/parquet-schemas.md (python -m quantinit.cellfiles writes it).
"""

from __future__ import annotations

import pandas as pd

from quantinit.intervals import INTERVAL_METRICS, PARTIAL_MODELS

KEYS = {
    "variant": ("string", "training variant, by its name (variants.reference or an override)"),
    "arch": ("string", "architecture, e.g. DWS_Conv_With_BN"),
    "init": ("string", "initializer by the paper's name, e.g. HeUni"),
    "seed": ("int64", "training seed"),
    "epoch": ("int64", "analysed epoch (the cell's checkpoint)"),
    "scheme": ("string", "quantization scheme, by its name in quantization.schemes"),
    "status": ("string", "training outcome: ok | diverged | not_learning"),
}


ACTIVATION = {
    "min": ("double", "minimum over the calibration images"),
    "max": ("double", "maximum over the calibration images"),
    "clip_lo": ("double", "bottom percentile (symmetric percentile clipping)"),
    "clip_hi": ("double", "top percentile"),
    "clipped_range": ("double", "clip_hi - clip_lo"),
    "channel_ranges": ("list<double>", "per channel, max - min of the clipped values"),
    "average_precision": ("double", "Eq. 2 on the clipped tensor: mean channel range / range"),
    "kl_uniform": ("double", "KL(histogram || uniform) on [clip_lo, clip_hi], 2^bits bins, nats"),
}


# Every per-cell Parquet file: {column: (Arrow type, meaning)}; docs/parquet-schemas.md is
# generated from this (python -m quantinit.cellfiles) and tests check real files against it.
SCHEMAS = {
    "calibration": {
        **KEYS,
        "tensor": ("string", "layer whose output is quantized (rescale = the input image)"),
        "order": ("int64", "position along the network"),
        "kind": ("string", "input | conv | depthwise | pointwise | dense | add (a residual sum)"),
        **ACTIVATION,
        "num_samples": ("int64", "calibration images (seeded draw from the training set)"),
        "percentile": ("double", "clipping percentile p (bottom and top p%)"),
    },
    "quantization": {
        **KEYS,
        "role": ("string", "weight | activation"),
        "tensor": ("string", "kernel layer (weights) or quantized output layer (activations)"),
        "kind": ("string", "input | conv | depthwise | pointwise | dense | add (a residual sum)"),
        "bits": ("int64", "bit width"),
        "narrow_range": ("bool", "true for symmetric schemes: integers [1, 2^bits - 1]"),
        "qmin": ("list<double>", "real range quantized, low end (one per channel if per-channel)"),
        "qmax": ("list<double>", "real range quantized, high end"),
        "nudged_min": ("list<double>", "TensorFlow's nudged low end (0 exactly representable)"),
        "nudged_max": ("list<double>", "nudged high end"),
        "scale": ("list<double>", "quantization step"),
    },
    "metrics": {
        **KEYS,
        "fp32_accuracy": ("double", "test accuracy of the trained float model, percent"),
        "quint8_accuracy": ("double", "test accuracy of the simulated quantized model, percent"),
        "tflite_int8_accuracy": ("double", "test accuracy of the full-integer TFLite model"),
        "qmse": ("double", "mean over images and classes of (p_fp32 - p_quint8)^2"),
        "qce": ("double", "mean over images of -sum_k p_fp32 log clip(p_quint8, eps, 1)"),
        "percent_accuracy_decrease": ("double", "100 (fp32 - quint8) / fp32"),
        "tflite_qmse": ("double", "QMSE of the TFLite model's dequantized outputs"),
        "quint8_minus_fp32": ("double", "quint8_accuracy - fp32_accuracy, percentage points"),
        "weight_only_accuracy": ("double", "accuracy with only the kernels quantized, percent"),
        "weight_only_qce": ("double", "QCE of the weight-only model against fp32"),
        "activation_only_accuracy": ("double", "accuracy with only the activations quantized"),
        "activation_only_qce": ("double", "QCE of the activation-only model against fp32"),
        **{
            f"{metric}_{end}": ("double", f"{which} end of {metric}'s bootstrap interval")
            for metric in INTERVAL_METRICS
            for end, which in (("lo", "lower"), ("hi", "upper"))
        },  # fmt: skip
        "confidence": ("double", "confidence level of the intervals (evaluation.intervals)"),
        "bootstrap_resamples": ("int64", "bootstrap resamples of the test images"),
        "tflite_error": ("string", "why LiteRT could not run the int8 model (else null)"),
        "test_samples": ("double", "test images evaluated"),
        "training_reason": ("string", "why training ended with its status"),
        "exported_epoch": ("int64", "epoch of the weights analysed (earlier if diverged)"),
    },
    "predictions": {
        **KEYS,
        "image": ("int64", "index of the test image in the data set's test split"),
        "label": ("int64", "true class"),
        "fp32_class": ("int64", "class the trained float model predicts"),
        "quint8_class": ("int64", "class the simulated quantized model predicts"),
        "tflite_class": ("int64", "class the TFLite int8 model predicts (null: not run)"),
        "fp32_correct": ("bool", "fp32_class == label"),
        "quint8_correct": ("bool", "quint8_class == label"),
        "tflite_correct": ("bool", "tflite_class == label (null: not run)"),
        "squared_error": ("double", "mean over classes of (p_fp32 - p_quint8)^2 (QMSE's term)"),
        "cross_entropy": ("double", "-sum_k p_fp32 log clip(p_quint8, eps, 1) (QCE's term)"),
        **{
            column: (dtype, text.format(model=model))
            for model in PARTIAL_MODELS
            for column, dtype, text in (
                (f"{model}_class", "int64", "class the {model} quantized model predicts"),
                (f"{model}_correct", "bool", "{model}_class == label"),
                (f"{model}_cross_entropy", "double", "the {model} model's QCE term"),
            )
        },  # fmt: skip
    },
    "layerwise": {
        **KEYS,
        "layer": ("string", "kernel layer name (conv1, block2_dw, fc1, logits ...)"),
        "order": ("int64", "position among kernel layers"),
        "kind": ("string", "conv | depthwise | pointwise | dense"),
        "fan_in": ("double", "Eq. 1 fan-in of the kernel"),
        "fan_out": ("double", "Eq. 1 fan-out of the kernel"),
        "weight_min": ("double", "trained kernel minimum"),
        "weight_max": ("double", "trained kernel maximum"),
        "weight_range": ("double", "trained kernel max - min"),
        "folded_weight_min": ("double", "BN-folded kernel minimum"),
        "folded_weight_max": ("double", "BN-folded kernel maximum"),
        "folded_weight_range": ("double", "BN-folded kernel max - min"),
        "folded_weight_precision": ("double", "Eq. 2 over the folded kernel's output channels"),
        "folded_weight_kl_uniform": ("double", "KL(histogram || uniform), 2^bits bins, nats"),
        "activation": ("string", "the layer whose output is this layer's quantized tensor"),
        "activation_clip_lo": ("double", "calibrated clipped range, low end"),
        "activation_clip_hi": ("double", "calibrated clipped range, high end"),
        "activation_range": ("double", "clipped activation range"),
        "activation_precision": ("double", "Eq. 2 of the clipped activations"),
        "activation_kl_uniform": ("double", "KL(histogram || uniform) of the activations"),
    },
    "quant_error": {
        **KEYS,
        "layer": ("string", "kernel layer name, as in layerwise.parquet"),
        "order": ("int64", "position among kernel layers, as in layerwise.parquet"),
        "kind": ("string", "conv | depthwise | pointwise | dense"),
        "activation": ("string", "the layer whose output is this layer's quantized tensor"),
        "mse": ("double", "mean squared error of the output tensor's own quantization"),
        "mae": ("double", "mean absolute error of that quantization"),
        "max_abs": ("double", "largest absolute error of that quantization"),
        "scale": ("double", "quantization step of the output tensor"),
        "rmse_over_scale": ("double", "rmse / step: 0.289 for pure rounding noise"),
        "sqnr_local_db": ("double", "SQNR (dB) of the output, only this layer quantized"),
        "sqnr_accumulated_db": ("double", "SQNR (dB) of the output, whole network quantized"),
        "tflite_sqnr_db": ("double", "SQNR (dB) of the TFLite int8 model's output vs float"),
        "tflite_vs_simulated_sqnr_db": (
            "double",
            "SQNR (dB) of the TFLite int8 output against the simulated model's",
        ),  # fmt: skip
        "tflite_error": ("string", "why the TFLite columns are empty (else null)"),
        "weight_mse": ("double", "folded kernel vs its fake-quantized kernel: squared error"),
        "weight_mae": ("double", "mean absolute error of the kernel"),
        "weight_max_abs": ("double", "largest absolute error of the kernel"),
        "weight_scale": ("double", "kernel quantization step (mean over channels if per-channel)"),
        "weight_rmse_over_scale": ("double", "kernel rmse / step"),
        "num_images": ("int64", "test images the activation errors are measured on"),
    },
    "sensitivity": {
        **KEYS,
        "layer": ("string", "kernel layer name, as in layerwise.parquet"),
        "order": ("int64", "position among kernel layers"),
        "kind": ("string", "conv | depthwise | pointwise | dense"),
        "only_accuracy": (
            "double",
            "accuracy (%), only this layer (kernel, output) quantized",
        ),
        "only_qce": ("double", "QCE against fp32 with only this layer quantized"),
        "all_but_accuracy": ("double", "accuracy (%) with every layer but this one quantized"),
        "all_but_qce": ("double", "QCE against fp32 with every layer but this one quantized"),
        "fp32_accuracy": ("double", "accuracy (%) of the float folded model on the same images"),
        "quint8_accuracy": ("double", "accuracy (%) of the fully quantized model"),
        "quint8_qce": ("double", "QCE of the fully quantized model"),
        "only_drop": ("double", "fp32_accuracy - only_accuracy: this layer's own cost"),
        "all_but_gain": (
            "double",
            "all_but_accuracy - quint8_accuracy: gain of keeping it float",
        ),
        "rank": ("int64", "1 = the layer whose own quantization costs the most"),
        "num_images": ("int64", "test images evaluated"),
    },
}


def scheme_cell(cell_json, scheme: str) -> dict:
    """The exported cell.json's contents and the job's scheme: what write_table keys a
    scheme's tables by."""
    from quantinit.io import read_json

    return {**read_json(cell_json), "scheme": scheme}


def cell_keys(cell: dict) -> dict:
    """The key columns every per-cell table carries, from scheme_cell's dict."""
    missing = [key for key in KEYS if key not in cell]
    if missing:
        raise ValueError(f"a cell's tables are keyed by {list(KEYS)}; {missing} missing")
    return {
        "variant": cell["variant"],
        "arch": cell["arch"],
        "init": cell["init"],
        "seed": int(cell["seed"]),
        "epoch": int(cell["epoch"]),
        "scheme": cell["scheme"],
        "status": cell["status"],
    }


def arrow_schema(table: str):
    """The pyarrow schema of one of the per-cell tables (SCHEMAS)."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int64": pa.int64(),
        "double": pa.float64(),
        "bool": pa.bool_(),
        "list<double>": pa.list_(pa.float64()),
    }
    return pa.schema([(name, types[kind]) for name, (kind, _) in SCHEMAS[table].items()])


def write_table(frame: pd.DataFrame, table: str, cell: dict, path) -> None:
    """Write `frame` as the cell's `table` file: key columns added, columns and types exactly
    as SCHEMAS says (missing columns become nulls), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from quantinit.io import atomic_path

    frame = frame.reset_index(drop=True).assign(**cell_keys(cell))
    frame = frame.reindex(columns=list(SCHEMAS[table]))
    frame = frame.astype(object).where(frame.notna(), None)
    arrow = pa.Table.from_pandas(frame, schema=arrow_schema(table), preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)


def placeholder_rows(names_and_kinds, name_column: str) -> pd.DataFrame:
    """Rows with only names, order and kind: what a diverged cell's tables hold."""
    return pd.DataFrame(
        [
            {name_column: name, "order": order, "kind": kind}
            for order, (name, kind) in enumerate(names_and_kinds)
        ]
    )


def schema_markdown() -> str:
    """docs/parquet-schemas.md: every per-cell table's columns, types and meanings."""
    lines = [
        "# Parquet schemas",
        "",
        "Generated from `quantinit.cellfiles.SCHEMAS` by `python -m quantinit.cellfiles`;",
        "the tests check files written by a real run against the same schemas. Each file",
        "lives in `results/<arch>/<init>/seed<seed>/epoch<E>/q/<scheme>/`, one folder per",
        "quantization scheme (a training variant's under `results/variants/<name>/`). A",
        "diverged cell's files keep every column, with nulls where nothing could be measured.",
        "",
        "Every Parquet file the workflow writes also carries, in its schema metadata under",
        "`quantinit_provenance`, a JSON object naming the code that wrote it:",
        "`quantinit_version`, `library_sha256` (sha256 of the library's sources),",
        "`git_commit` and `git_dirty` (null outside a git checkout);",
        "`quantinit.io.read_provenance(path)` reads it.",
    ]
    for table, columns in SCHEMAS.items():
        lines += ["", f"## {table}.parquet", "", "| column | type | meaning |"]
        lines += ["| --- | --- | --- |"]
        lines += [
            f"| `{name}` | {kind} | {meaning.replace('|', chr(92) + '|')} |"
            for name, (kind, meaning) in columns.items()
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(schema_markdown(), end="")
