"""Rule quantize: quantization parameters of every tensor, and the full-integer TFLite model."""

from pathlib import Path

import pandas as pd

from quantinit.io import atomic_path, read_json, redirect_output_to_log
from quantinit.registry import STATUS_DIVERGED
from quantinit.tables import activation_bounds, load_weights, quantization_table, write_table

redirect_output_to_log(snakemake.log[0])
cell = read_json(snakemake.input.cell)
scheme = snakemake.params.quantization
layers, _, folded = load_weights(snakemake.input.weights)
kinds = {layer.name: layer.kind for layer in layers}

if cell["status"] == STATUS_DIVERGED:
    print("cell diverged in training: nothing to quantize")
    table = pd.DataFrame()
    tflite_model = b""
else:
    calibration = pd.read_parquet(snakemake.input.calibration)
    bounds = activation_bounds(calibration, scheme["calibration"])
    tensor_kinds = {**kinds, **dict(zip(calibration.tensor, calibration.kind, strict=True))}
    table = quantization_table(folded, tensor_kinds, bounds, scheme)
    print(f"scheme {scheme}: {len(table)} quantized tensors")
    tflite_model = b""
    if snakemake.params.tflite:
        from quantinit.runtime import configure_tensorflow

        configure_tensorflow(snakemake.threads, use_gpu=snakemake.resources.gpu > 0)
        import keras

        from quantinit.data import load_dataset
        from quantinit.tables import calibration_indices
        from quantinit.tflite import convert_full_integer

        dataset = load_dataset(snakemake.input.dataset)
        indices = calibration_indices(
            len(dataset.x_train), snakemake.params.calibration["num_samples"], cell["seed"]
        )
        model = keras.models.load_model(snakemake.input.model)
        tflite_model = convert_full_integer(model, dataset.x_train[indices])
        print(f"TFLite full-integer model: {len(tflite_model)} bytes")
write_table(table, "quantization", cell, snakemake.output.quantization)
with atomic_path(snakemake.output.tflite) as tmp:
    Path(tmp).write_bytes(tflite_model)
