"""Rules figure2, figure3, dynamics_figure, sensitivity_figure, degradation_heatmap and
accuracy_vs_epoch: one study figure each, as PNG and PDF."""

import pandas as pd

from quantinit import figures
from quantinit.io import start_job

start_job(snakemake)


def read_all(paths):
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


paths = [snakemake.output.png, snakemake.output.pdf]
figure = snakemake.params.figure
if figure == "figure2":
    cells = [tuple(c) for c in snakemake.params.cells]
    figures.figure2_vanishing_act(read_all(snakemake.input.layerwise), cells, paths)
elif figure == "figure3":
    cells = [tuple(c) for c in snakemake.params.cells]
    figures.figure3_layerwise(read_all(snakemake.input.layerwise), cells, paths)
elif figure == "dynamics":
    dynamics = read_all(snakemake.input.dynamics)
    figures.dynamics_figure(dynamics, snakemake.wildcards.arch, snakemake.wildcards.init, paths)
elif figure == "sensitivity":
    arch, init = snakemake.wildcards.arch, snakemake.wildcards.init
    tables = [read_all(snakemake.input[n]) for n in ("layerwise", "quant_error", "sensitivity")]
    figures.sensitivity_figure(*tables, arch, init, paths)
elif figure == "heatmap":
    figures.degradation_heatmap(pd.read_parquet(snakemake.input.metrics), paths)
elif figure == "accuracy_vs_epoch":
    metrics = pd.read_parquet(snakemake.input.metrics)
    figures.accuracy_vs_epoch(metrics, paths, confidence=snakemake.params.confidence)
else:
    raise ValueError(f"unknown figure {figure!r}")
print(f"wrote {', '.join(paths)}")
