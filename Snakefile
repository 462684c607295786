# Weight initialization vs. 8-bit quantization (Yun and Wong, "Where Should We Begin?").
# Run: snakemake --cores 8 [--configfile config/quick.yaml]. See README.md.


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    default_target: True
    input:
        per_cell_results(),
        study_outputs(),
