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
        # Only the study outputs: they need every cell's final files, table2.md through
        # collect_study (every cell's metrics and layerwise) and, with sensitivity enabled,
        # most_sensitive.md through collect_sensitivity (every cell's quant_error and
        # sensitivity). Listing those files here too printed every path on the console.
        study_outputs(),
