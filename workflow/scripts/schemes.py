"""Rule schemes: every cell in every quantization scheme (table, Markdown with the ranking
agreement, figure)."""

from pathlib import Path

from quantinit.aggregate import axis_markdown, ranking_agreement, schemes_table
from quantinit.figures import axis_figure
from quantinit.io import atomic_path, start_job

start_job(snakemake)
import pandas as pd  # noqa: E402

confidence = snakemake.params.confidence
table = schemes_table(
    pd.read_parquet(snakemake.input.metrics), snakemake.params.schemes, confidence
)
agreement = ranking_agreement(table, snakemake.params.reference)
with atomic_path(snakemake.output.table) as tmp:
    table.to_csv(tmp, index=False)
text = axis_markdown(table, agreement)
with atomic_path(snakemake.output.markdown) as tmp:
    Path(tmp).write_text(text)
axis_figure(table, [snakemake.output.png, snakemake.output.pdf], confidence)
print(text)
