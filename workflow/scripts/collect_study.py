"""Rule collect_study: concatenate every cell's metrics, layerwise and dynamics tables."""

import pandas as pd

from quantinit.io import redirect_output_to_log, write_parquet

redirect_output_to_log(snakemake.log[0])
for name in ("metrics", "layerwise", "dynamics"):
    paths = snakemake.input[name]
    frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    write_parquet(frame, snakemake.output[name])
    print(f"{name}: {len(paths)} files, {len(frame)} rows")
