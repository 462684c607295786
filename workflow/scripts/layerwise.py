"""Rule layerwise: per-layer weight, folded-weight and activation statistics (no TensorFlow)."""

import pandas as pd

from quantinit.cellfiles import load_weights, placeholder_rows, write_table
from quantinit.io import read_json, start_job
from quantinit.registry import STATUS_DIVERGED
from quantinit.tables import layerwise_table

start_job(snakemake)
cell = read_json(snakemake.input.cell)
layers, trained, folded = load_weights(snakemake.input.weights)

if cell["status"] == STATUS_DIVERGED:
    print("cell diverged in training: rows carry the status, statistics left empty")
    table = placeholder_rows(((layer.name, layer.kind) for layer in layers), "layer")
else:
    calibration = pd.read_parquet(snakemake.input.calibration)
    table = layerwise_table(layers, trained, folded, calibration, snakemake.params.bits)
    print(table.to_string(max_cols=12))
write_table(table, "layerwise", cell, snakemake.output.layerwise)
