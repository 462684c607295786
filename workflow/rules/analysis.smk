rule build_engine:
    output:
        engine=f"{ENGINE}.tflite",
        manifest=f"{ENGINE}.json",
    log:
        f"{RESULTS}/engines/logs/{{arch}}.log",
    benchmark:
        f"{RESULTS}/engines/benchmarks/{{arch}}.tsv"
    conda:
        "../envs/tensorflow.yaml"
    threads: analysis_resource("threads")
    resources:
        mem_mb=analysis_resource("mem_mb"),
        runtime=analysis_resource("runtime"),
    params:
        code=code_version("build_engine.py"),
        model=config["model"],
    script:
        "../scripts/build_engine.py"


rule fold_bn:
    input:
        layers=f"{EPOCH_DIR}/layers.npz",
        cell=f"{EPOCH_DIR}/cell.json",
    output:
        weights=f"{EPOCH_DIR}/weights.npz",
    log:
        f"{EPOCH_DIR}/logs/fold_bn.log",
    benchmark:
        f"{EPOCH_DIR}/benchmarks/fold_bn.tsv"
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code_version("fold_bn.py"),
    script:
        "../scripts/fold_bn.py"


rule calibrate:
    input:
        engine=f"{ENGINE}.tflite",
        manifest=f"{ENGINE}.json",
        weights=f"{EPOCH_DIR}/weights.npz",
        dataset=DATASET,
        cell=f"{EPOCH_DIR}/cell.json",
    output:
        calibration=f"{Q_DIR}/calibration.parquet",
    log:
        f"{Q_DIR}/logs/calibrate.log",
    benchmark:
        f"{Q_DIR}/benchmarks/calibrate.tsv"
    conda:
        "../envs/litert.yaml"
    threads: analysis_resource("threads")
    resources:
        mem_mb=analysis_resource("mem_mb"),
        runtime=analysis_resource("runtime"),
    params:
        code=code_version("calibrate.py"),
        num_samples=config["calibration"]["num_samples"],
        percentile=scheme_percentile,
        bits=scheme_bits,
    script:
        "../scripts/calibrate.py"


rule quantize:
    input:
        weights=f"{EPOCH_DIR}/weights.npz",
        calibration=f"{Q_DIR}/calibration.parquet",
        cell=f"{EPOCH_DIR}/cell.json",
    output:
        quantization=f"{Q_DIR}/quantization.parquet",
    log:
        f"{Q_DIR}/logs/quantize.log",
    benchmark:
        f"{Q_DIR}/benchmarks/quantize.tsv"
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code_version("quantize.py"),
        scheme=scheme_settings,
    script:
        "../scripts/quantize.py"


rule evaluate:
    input:
        model=f"{EPOCH_DIR}/model.keras",
        engine=f"{ENGINE}.tflite",
        manifest=f"{ENGINE}.json",
        weights=f"{EPOCH_DIR}/weights.npz",
        quantization=f"{Q_DIR}/quantization.parquet",
        dataset=DATASET,
        cell=f"{EPOCH_DIR}/cell.json",
    output:
        metrics=f"{Q_DIR}/metrics.parquet",
        predictions=f"{Q_DIR}/predictions.parquet",
        tflite=f"{Q_DIR}/model_int8.tflite",
    log:
        f"{Q_DIR}/logs/evaluate.log",
    benchmark:
        f"{Q_DIR}/benchmarks/evaluate.tsv"
    conda:
        "../envs/tensorflow.yaml"
    threads: analysis_resource("threads")
    resources:
        mem_mb=analysis_resource("mem_mb"),
        runtime=analysis_resource("runtime"),
        gpu=analysis_resource("gpu"),
    params:
        code=code_version("evaluate.py"),
        scheme=scheme_settings,
        evaluation=config["evaluation"],
        calibration_samples=config["calibration"]["num_samples"],
    script:
        "../scripts/evaluate.py"


rule layerwise:
    input:
        weights=f"{EPOCH_DIR}/weights.npz",
        calibration=f"{Q_DIR}/calibration.parquet",
        cell=f"{EPOCH_DIR}/cell.json",
    output:
        layerwise=f"{Q_DIR}/layerwise.parquet",
    log:
        f"{Q_DIR}/logs/layerwise.log",
    benchmark:
        f"{Q_DIR}/benchmarks/layerwise.tsv"
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code_version("layerwise.py"),
        bits=scheme_bits,
    script:
        "../scripts/layerwise.py"


rule quant_sensitivity:
    input:
        engine=f"{ENGINE}.tflite",
        manifest=f"{ENGINE}.json",
        tflite=f"{Q_DIR}/model_int8.tflite",
        quantization=f"{Q_DIR}/quantization.parquet",
        weights=f"{EPOCH_DIR}/weights.npz",
        dataset=DATASET,
        cell=f"{EPOCH_DIR}/cell.json",
    output:
        errors=f"{Q_DIR}/quant_error.parquet",
        sensitivity=f"{Q_DIR}/sensitivity.parquet",
        summary=f"{Q_DIR}/sensitivity_summary.json",
    log:
        f"{Q_DIR}/logs/quant_sensitivity.log",
    benchmark:
        f"{Q_DIR}/benchmarks/quant_sensitivity.tsv"
    conda:
        "../envs/litert.yaml"
    threads: analysis_resource("threads")
    resources:
        mem_mb=analysis_resource("mem_mb"),
        runtime=analysis_resource("runtime"),
    params:
        code=code_version("quant_sensitivity.py"),
        scheme=scheme_settings,
        tflite=config["evaluation"]["tflite"],
        num_images=config["sensitivity"]["num_images"],
        qce_epsilon=config["evaluation"]["qce_epsilon"],
    script:
        "../scripts/quant_sensitivity.py"
