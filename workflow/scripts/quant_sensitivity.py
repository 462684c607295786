"""Rule quant_sensitivity: per-layer quantization error and per-layer sensitivity of a cell,
on the architecture's LiteRT engine (no TensorFlow)."""

from pathlib import Path

import pandas as pd

from quantinit.cellfiles import placeholder_rows, scheme_cell, write_table
from quantinit.io import start_job, write_json
from quantinit.layerfiles import load_folded, load_weights
from quantinit.registry import STATUS_DIVERGED
from quantinit.schemes import no_tflite_reason

start_job(snakemake)
cell = scheme_cell(snakemake.input.cell, snakemake.wildcards.scheme)
scheme = snakemake.params.scheme
layers, _, _ = load_weights(snakemake.input.weights)

if cell["status"] == STATUS_DIVERGED:
    print("cell diverged in training: rows carry the status, measurements left empty")
    errors = placeholder_rows(((layer.name, layer.kind) for layer in layers), "layer")
    sensitivity = errors.copy()
    summary = {"most_sensitive": [], "num_images": 0}
else:
    from quantinit.data import load_dataset
    from quantinit.engine import Engine, QuantizedNetwork
    from quantinit.layerfiles import load_folded, load_tensor_kinds
    from quantinit.sampling import sensitivity_indices
    from quantinit.sensitivity import measure_sensitivity
    from quantinit.tables import quantized_activation_bounds

    engine = Engine.load(
        snakemake.input.engine, snakemake.input.manifest, num_threads=snakemake.threads
    )
    engine.check_network(layers, load_tensor_kinds(snakemake.input.weights))
    folded = load_folded(snakemake.input.weights)
    network = QuantizedNetwork(
        engine,
        folded,
        quantized_activation_bounds(pd.read_parquet(snakemake.input.quantization)),
        scheme,
    )
    dataset = load_dataset(snakemake.input.dataset)
    indices = sensitivity_indices(len(dataset.x_test), snakemake.params.num_images, cell["seed"])
    errors, sensitivity, most = measure_sensitivity(
        network,
        folded,
        scheme,
        dataset.x_test[indices],
        dataset.y_test[indices],
        qce_epsilon=snakemake.params.qce_epsilon,
        tflite_model=Path(snakemake.input.tflite).read_bytes(),
        no_tflite=no_tflite_reason(scheme, snakemake.params.tflite),
    )
    summary = {"most_sensitive": most, "num_images": len(indices)}
    print(errors.to_string(max_cols=10))
    print(sensitivity.to_string(max_cols=14))
    print("most sensitive layers:", most)
    errors["num_images"] = sensitivity["num_images"] = len(indices)

write_table(errors, "quant_error", cell, snakemake.output.errors)
write_table(sensitivity, "sensitivity", cell, snakemake.output.sensitivity)
write_json({**cell, **summary}, snakemake.output.summary)
