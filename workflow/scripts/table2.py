"""Rule table2: the paper's Table 2 from this run, the paper's next to ours, and where the
quantization error comes from (weight-only / activation-only)."""

from pathlib import Path

from quantinit.aggregate import (
    SPLIT_COLUMNS,
    comparison,
    comparison_markdown,
    quantization_split,
    read_paper_table2,
    table2,
    table2_markdown,
)
from quantinit.io import atomic_path, start_job, write_parquet

start_job(snakemake)
import pandas as pd  # noqa: E402

metrics = pd.read_parquet(snakemake.input.metrics)
table = table2(
    metrics,
    include_failed=snakemake.params.include_failed,
    confidence=snakemake.params.confidence,
)
side_by_side = comparison(table, read_paper_table2(snakemake.input.paper))
split = quantization_split(metrics, confidence=snakemake.params.confidence)
write_parquet(table, snakemake.output.table)
for frame, path in (
    (table, snakemake.output.csv),
    (side_by_side, snakemake.output.comparison),
    (split, snakemake.output.split),
):
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
texts = {
    snakemake.output.markdown: table2_markdown(table),
    snakemake.output.comparison_markdown: comparison_markdown(side_by_side),
    snakemake.output.split_markdown: table2_markdown(split, SPLIT_COLUMNS),
}
for path, text in texts.items():
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
print(table2_markdown(table))
