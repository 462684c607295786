"""Rules collect_study, collect_schemes, collect_variants, collect_sensitivity: concatenate
every cell's per-cell tables."""

import pandas as pd

from quantinit.io import start_job, write_parquet

start_job(snakemake)
for name in snakemake.output.keys():
    paths = snakemake.input[name]
    frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    write_parquet(frame, snakemake.output[name])
    print(f"{name}: {len(paths)} files, {len(frame)} rows")
