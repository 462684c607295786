"""Rule quantize: the quantization parameters of every weight and activation tensor (the
simulated quint8 model's; numpy only)."""

import pandas as pd

from quantinit.cellfiles import load_weights, write_table
from quantinit.io import read_json, start_job
from quantinit.registry import STATUS_DIVERGED
from quantinit.tables import quantize

start_job(snakemake)
cell = read_json(snakemake.input.cell)
scheme = snakemake.params.quantization
layers, _, folded = load_weights(snakemake.input.weights)

if cell["status"] == STATUS_DIVERGED:
    print("cell diverged in training: nothing to quantize")
    table = pd.DataFrame()
else:
    calibration = pd.read_parquet(snakemake.input.calibration)
    table = quantize(folded, {layer.name: layer.kind for layer in layers}, calibration, scheme)
    print(f"scheme {scheme}: {len(table)} quantized tensors")
write_table(table, "quantization", cell, snakemake.output.quantization)
