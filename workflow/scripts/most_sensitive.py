"""Rule most_sensitive: for each (arch, init), the layer whose quantization costs the most."""

from pathlib import Path

import pandas as pd

from quantinit.aggregate import most_sensitive_table, to_markdown
from quantinit.io import atomic_path, start_job

start_job(snakemake)
table = most_sensitive_table(pd.read_parquet(snakemake.input.sensitivity))
with atomic_path(snakemake.output.csv) as tmp:
    table.to_csv(tmp, index=False)
text = to_markdown(table, digits={"QCE": 3})
with atomic_path(snakemake.output.markdown) as tmp:
    Path(tmp).write_text(text)
print(text)
