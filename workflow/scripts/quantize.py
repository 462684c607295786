"""Rule quantize: the quantization parameters of every weight and activation tensor (the
simulated quantized model's, in the job's scheme; numpy only)."""

import pandas as pd

from quantinit.cellfiles import scheme_cell, write_table
from quantinit.io import start_job
from quantinit.layerfiles import load_weights
from quantinit.registry import STATUS_DIVERGED
from quantinit.tables import quantize

start_job(snakemake)
cell = scheme_cell(snakemake.input.cell, snakemake.wildcards.scheme)
scheme = snakemake.params.scheme
layers, _, folded = load_weights(snakemake.input.weights)

if cell["status"] == STATUS_DIVERGED:
    print("cell diverged in training: nothing to quantize")
    table = pd.DataFrame()
else:
    calibration = pd.read_parquet(snakemake.input.calibration)
    table = quantize(folded, {layer.name: layer.kind for layer in layers}, calibration, scheme)
    print(f"scheme {scheme}: {len(table)} quantized tensors")
write_table(table, "quantization", cell, snakemake.output.quantization)
