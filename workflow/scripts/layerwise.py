"""Rule layerwise: per-layer weight, folded-weight and activation statistics (no TensorFlow)."""

import pandas as pd

from quantinit.cellfiles import placeholder_rows, scheme_cell, write_table
from quantinit.io import start_job
from quantinit.layerfiles import load_weights
from quantinit.registry import STATUS_DIVERGED
from quantinit.tables import layerwise_table

start_job(snakemake)
cell = scheme_cell(snakemake.input.cell, snakemake.wildcards.scheme)
layers, trained, folded = load_weights(snakemake.input.weights)

if cell["status"] == STATUS_DIVERGED:
    print("cell diverged in training: rows carry the status, statistics left empty")
    table = placeholder_rows(((layer.name, layer.kind) for layer in layers), "layer")
else:
    calibration = pd.read_parquet(snakemake.input.calibration)
    table = layerwise_table(layers, trained, folded, calibration, snakemake.params.bits)
    print(table.to_string(max_cols=12))
write_table(table, "layerwise", cell, snakemake.output.layerwise)
