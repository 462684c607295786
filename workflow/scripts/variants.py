"""Rule variants: every cell under every training variant, in Table 2's scheme (table,
Markdown with the ranking agreement and the paper's claims per variant, figure)."""

from pathlib import Path

from quantinit.aggregate import axis_markdown, ranking_agreement, variants_table
from quantinit.claims import claims_by_variant, claims_by_variant_markdown
from quantinit.figures import axis_figure
from quantinit.io import atomic_path, start_job

start_job(snakemake)
import pandas as pd  # noqa: E402

confidence = snakemake.params.confidence
variants = snakemake.params.variants
metrics = pd.read_parquet(snakemake.input.metrics)
table = variants_table(metrics, variants, confidence)
agreement = ranking_agreement(table, variants["reference"], axis="Variant")
claims = claims_by_variant(
    metrics,
    pd.read_parquet(snakemake.input.layerwise),
    list(dict.fromkeys(table["Variant"])),
    confidence,
)
with atomic_path(snakemake.output.table) as tmp:
    table.to_csv(tmp, index=False)
with atomic_path(snakemake.output.claims) as tmp:
    claims.to_csv(tmp, index=False)
text = "\n".join(
    [
        f"# Training variants (quantization scheme {snakemake.params.scheme})\n",
        axis_markdown(table, agreement, axis="Variant"),
        claims_by_variant_markdown(claims),
    ]
)
with atomic_path(snakemake.output.markdown) as tmp:
    Path(tmp).write_text(text)
axis_figure(table, [snakemake.output.png, snakemake.output.pdf], confidence, axis="Variant")
print(text)
