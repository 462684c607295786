rule collect_study:
    input:
        metrics=expand_cells(f"{Q_DIR}/metrics.parquet"),
        layerwise=expand_cells(f"{Q_DIR}/layerwise.parquet"),
        dynamics=expand_cells(f"{TRAIN_DIR}/dynamics.parquet"),
    output:
        metrics=f"{STUDY}/metrics.parquet",
        layerwise=f"{STUDY}/layerwise.parquet",
        dynamics=f"{STUDY}/dynamics.parquet",
    log:
        f"{STUDY}/logs/collect_study.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("collect_study.py"),
    message:
        "collecting every cell's metrics, layerwise (Table 2's scheme) and dynamics tables"
    script:
        "../scripts/collect_study.py"


rule collect_schemes:
    input:
        table=lambda wc: expand_cells(
            f"{Q_DIR}/{wc.table}.parquet", schemes=list(SCHEMES)
        ),
    output:
        table=f"{STUDY}/schemes/{{table}}.parquet",
    log:
        f"{STUDY}/logs/collect_schemes_{{table}}.log",
    wildcard_constraints:
        table="|".join(scheme_table_names()),
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("collect_study.py"),
    message:
        "collecting every cell's {wildcards.table} table in every quantization scheme"
    script:
        "../scripts/collect_study.py"


rule collect_variants:
    input:
        table=lambda wc: expand_cells(
            f"{Q_DIR}/{wc.table}.parquet", variants=list(VARIANTS)
        ),
    output:
        table=f"{STUDY}/variants/{{table}}.parquet",
    log:
        f"{STUDY}/logs/collect_variants_{{table}}.log",
    wildcard_constraints:
        table="metrics|layerwise",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("collect_study.py"),
    message:
        "collecting every cell's {wildcards.table} table under every training variant"
    script:
        "../scripts/collect_study.py"


rule variants:
    input:
        metrics=f"{STUDY}/variants/metrics.parquet",
        layerwise=f"{STUDY}/variants/layerwise.parquet",
    output:
        table=report(
            f"{STUDY}/variants.csv",
            caption="../report/variants.rst",
            category="Tables",
        ),
        claims=f"{STUDY}/variants_claims.csv",
        markdown=f"{STUDY}/variants.md",
        png=report(
            f"{FIGURES}/variants.png",
            caption="../report/variants_figure.rst",
            category="Figures",
        ),
        pdf=f"{FIGURES}/variants.pdf",
    log:
        f"{STUDY}/logs/variants.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_version("variants.py"),
        variants=config["variants"],
        scheme=TABLE2_SCHEME,
        confidence=config["evaluation"]["intervals"]["confidence"],
    script:
        "../scripts/variants.py"


rule schemes:
    input:
        metrics=f"{STUDY}/schemes/metrics.parquet",
    output:
        table=report(
            f"{STUDY}/schemes.csv",
            caption="../report/schemes.rst",
            category="Tables",
        ),
        markdown=f"{STUDY}/schemes.md",
        png=report(
            f"{FIGURES}/schemes.png",
            caption="../report/schemes_figure.rst",
            category="Figures",
        ),
        pdf=f"{FIGURES}/schemes.pdf",
    log:
        f"{STUDY}/logs/schemes.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_version("schemes.py"),
        schemes=list(SCHEMES.values()),
        reference=TABLE2_SCHEME,
        confidence=config["evaluation"]["intervals"]["confidence"],
    script:
        "../scripts/schemes.py"


rule table2:
    input:
        metrics=f"{STUDY}/metrics.parquet",
        paper=PAPER_TABLE2,
    output:
        table=f"{STUDY}/table2.parquet",
        csv=report(
            f"{STUDY}/table2.csv",
            caption="../report/table2.rst",
            category="Tables",
        ),
        markdown=f"{STUDY}/table2.md",
        comparison=report(
            f"{STUDY}/comparison.csv",
            caption="../report/comparison.rst",
            category="Tables",
        ),
        comparison_markdown=f"{STUDY}/comparison.md",
        split=report(
            f"{STUDY}/quantization_split.csv",
            caption="../report/quantization_split.rst",
            category="Tables",
        ),
        split_markdown=f"{STUDY}/quantization_split.md",
    log:
        f"{STUDY}/logs/table2.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_version("table2.py"),
        include_failed=config["aggregate"]["include_failed"],
        confidence=config["evaluation"]["intervals"]["confidence"],
    script:
        "../scripts/table2.py"


rule claims:
    input:
        table=f"{STUDY}/table2.parquet",
        layerwise=f"{STUDY}/layerwise.parquet",
    output:
        table=report(
            f"{STUDY}/claims.csv",
            caption="../report/claims.rst",
            category="Tables",
        ),
        parquet=f"{STUDY}/claims.parquet",
        markdown=f"{STUDY}/claims.md",
    log:
        f"{STUDY}/logs/claims.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_version("claims.py"),
        confidence=config["evaluation"]["intervals"]["confidence"],
    script:
        "../scripts/claims.py"


rule figure2:
    input:
        layerwise=lambda wc: selected_cells(
            "figure2_cells", f"{Q_DIR}/layerwise.parquet"
        ),
    output:
        png=report(
            f"{FIGURES}/figure2_vanishing_act.png",
            caption="../report/figure2.rst",
            category="Figures",
        ),
        pdf=f"{FIGURES}/figure2_vanishing_act.pdf",
    log:
        f"{STUDY}/logs/figure2.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_version("figure.py"),
        figure="figure2",
        cells=lambda wc: cell_pairs("figure2_cells"),
    script:
        "../scripts/figure.py"


rule figure3:
    input:
        layerwise=lambda wc: selected_cells(
            "figure3_cells", f"{Q_DIR}/layerwise.parquet"
        ),
    output:
        png=report(
            f"{FIGURES}/figure3_layerwise.png",
            caption="../report/figure3.rst",
            category="Figures",
        ),
        pdf=f"{FIGURES}/figure3_layerwise.pdf",
    log:
        f"{STUDY}/logs/figure3.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_version("figure.py"),
        figure="figure3",
        cells=lambda wc: cell_pairs("figure3_cells"),
    script:
        "../scripts/figure.py"


rule dynamics_figure:
    input:
        dynamics=lambda wc: expand(
            f"{TRAIN_DIR}/dynamics.parquet",
            variant_dir=REFERENCE_VARIANT,
            arch=wc.arch,
            init=wc.init,
            seed=config["seeds"],
        ),
    output:
        png=report(
            f"{FIGURES}/dynamics_{{arch}}_{{init}}.png",
            caption="../report/dynamics.rst",
            category="Figures",
        ),
        pdf=f"{FIGURES}/dynamics_{{arch}}_{{init}}.pdf",
    log:
        f"{STUDY}/logs/dynamics_{{arch}}_{{init}}.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_version("figure.py"),
        figure="dynamics",
    script:
        "../scripts/figure.py"


rule degradation_heatmap:
    input:
        metrics=f"{STUDY}/metrics.parquet",
    output:
        png=report(
            f"{FIGURES}/degradation_heatmap.png",
            caption="../report/degradation_heatmap.rst",
            category="Figures",
        ),
        pdf=f"{FIGURES}/degradation_heatmap.pdf",
    log:
        f"{STUDY}/logs/degradation_heatmap.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_version("figure.py"),
        figure="heatmap",
    script:
        "../scripts/figure.py"


rule accuracy_vs_epoch:
    input:
        metrics=f"{STUDY}/metrics.parquet",
    output:
        png=report(
            f"{FIGURES}/accuracy_vs_epoch.png",
            caption="../report/accuracy_vs_epoch.rst",
            category="Figures",
        ),
        pdf=f"{FIGURES}/accuracy_vs_epoch.pdf",
    log:
        f"{STUDY}/logs/accuracy_vs_epoch.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_version("figure.py"),
        figure="accuracy_vs_epoch",
        confidence=config["evaluation"]["intervals"]["confidence"],
    script:
        "../scripts/figure.py"


rule collect_sensitivity:
    input:
        quant_error=expand_cells(f"{Q_DIR}/quant_error.parquet"),
        sensitivity=expand_cells(f"{Q_DIR}/sensitivity.parquet"),
    output:
        quant_error=f"{STUDY}/quant_error.parquet",
        sensitivity=f"{STUDY}/sensitivity.parquet",
    log:
        f"{STUDY}/logs/collect_sensitivity.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("collect_study.py"),
    message:
        "collecting every cell's quant_error and sensitivity tables (Table 2's scheme)"
    script:
        "../scripts/collect_study.py"


rule most_sensitive:
    input:
        sensitivity=f"{STUDY}/sensitivity.parquet",
    output:
        csv=report(
            f"{STUDY}/most_sensitive.csv",
            caption="../report/most_sensitive.rst",
            category="Tables",
        ),
        markdown=f"{STUDY}/most_sensitive.md",
    log:
        f"{STUDY}/logs/most_sensitive.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_version("most_sensitive.py"),
    script:
        "../scripts/most_sensitive.py"


rule sensitivity_figure:
    input:
        layerwise=lambda wc: cell_files(wc, "layerwise"),
        quant_error=lambda wc: cell_files(wc, "quant_error"),
        sensitivity=lambda wc: cell_files(wc, "sensitivity"),
    output:
        png=report(
            f"{FIGURES}/sensitivity_{{arch}}_{{init}}.png",
            caption="../report/sensitivity.rst",
            category="Figures",
        ),
        pdf=f"{FIGURES}/sensitivity_{{arch}}_{{init}}.pdf",
    log:
        f"{STUDY}/logs/sensitivity_{{arch}}_{{init}}.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_version("figure.py"),
        figure="sensitivity",
    script:
        "../scripts/figure.py"
