"""Rule claims: which of the paper's qualitative claims this run supports."""

from pathlib import Path

import pandas as pd

from quantinit.claims import claims_markdown, claims_table
from quantinit.io import atomic_path, start_job, write_parquet

start_job(snakemake)
claims = claims_table(
    pd.read_parquet(snakemake.input.table),
    pd.read_parquet(snakemake.input.layerwise),
    confidence=snakemake.params.confidence,
)
write_parquet(claims, snakemake.output.parquet)
with atomic_path(snakemake.output.table) as tmp:
    claims.to_csv(tmp, index=False)
text = claims_markdown(claims)
with atomic_path(snakemake.output.markdown) as tmp:
    Path(tmp).write_text(text)
print(text)
