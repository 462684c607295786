# Weight initialization vs. 8-bit quantization (Yun and Wong, "Where Should We Begin?").
# Run: snakemake --cores 8 [--configfile config/quick.yaml]. See README.md.
# The workflow itself is workflow/Snakefile (the Snakemake workflow catalog's layout).


include: "workflow/Snakefile"


# Snakemake keeps an included file's default target to that file: make `all` this one's too.
workflow.default_target = "all"
