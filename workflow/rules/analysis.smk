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
        model=f"{EPOCH_DIR}/model.keras",
        weights=f"{EPOCH_DIR}/weights.npz",
        dataset=DATASET,
        cell=f"{EPOCH_DIR}/cell.json",
    output:
        calibration=f"{EPOCH_DIR}/calibration.parquet",
    log:
        f"{EPOCH_DIR}/logs/calibrate.log",
    benchmark:
        f"{EPOCH_DIR}/benchmarks/calibrate.tsv"
    conda:
        "../envs/tensorflow.yaml"
    threads: analysis_resource("threads")
    resources:
        mem_mb=analysis_resource("mem_mb"),
        runtime=analysis_resource("runtime"),
        gpu=analysis_resource("gpu"),
    params:
        code=code_version("calibrate.py"),
        calibration=config["calibration"],
        bits=config["quantization"]["bits"],
    script:
        "../scripts/calibrate.py"


rule quantize:
    input:
        weights=f"{EPOCH_DIR}/weights.npz",
        calibration=f"{EPOCH_DIR}/calibration.parquet",
        cell=f"{EPOCH_DIR}/cell.json",
    output:
        quantization=f"{EPOCH_DIR}/quantization.parquet",
    log:
        f"{EPOCH_DIR}/logs/quantize.log",
    benchmark:
        f"{EPOCH_DIR}/benchmarks/quantize.tsv"
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code_version("quantize.py"),
        quantization=config["quantization"],
    script:
        "../scripts/quantize.py"


rule evaluate:
    input:
        model=f"{EPOCH_DIR}/model.keras",
        weights=f"{EPOCH_DIR}/weights.npz",
        quantization=f"{EPOCH_DIR}/quantization.parquet",
        dataset=DATASET,
        cell=f"{EPOCH_DIR}/cell.json",
    output:
        metrics=f"{EPOCH_DIR}/metrics.parquet",
        predictions=f"{EPOCH_DIR}/predictions.parquet",
        tflite=f"{EPOCH_DIR}/model_int8.tflite",
    log:
        f"{EPOCH_DIR}/logs/evaluate.log",
    benchmark:
        f"{EPOCH_DIR}/benchmarks/evaluate.tsv"
    conda:
        "../envs/tensorflow.yaml"
    threads: analysis_resource("threads")
    resources:
        mem_mb=analysis_resource("mem_mb"),
        runtime=analysis_resource("runtime"),
        gpu=analysis_resource("gpu"),
    params:
        code=code_version("evaluate.py"),
        quantization=config["quantization"],
        evaluation=config["evaluation"],
        calibration_samples=config["calibration"]["num_samples"],
    script:
        "../scripts/evaluate.py"


rule layerwise:
    input:
        weights=f"{EPOCH_DIR}/weights.npz",
        calibration=f"{EPOCH_DIR}/calibration.parquet",
        cell=f"{EPOCH_DIR}/cell.json",
    output:
        layerwise=f"{EPOCH_DIR}/layerwise.parquet",
    log:
        f"{EPOCH_DIR}/logs/layerwise.log",
    benchmark:
        f"{EPOCH_DIR}/benchmarks/layerwise.tsv"
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code_version("layerwise.py"),
        bits=config["quantization"]["bits"],
    script:
        "../scripts/layerwise.py"


rule quant_sensitivity:
    input:
        model=f"{EPOCH_DIR}/model.keras",
        tflite=f"{EPOCH_DIR}/model_int8.tflite",
        quantization=f"{EPOCH_DIR}/quantization.parquet",
        weights=f"{EPOCH_DIR}/weights.npz",
        dataset=DATASET,
        cell=f"{EPOCH_DIR}/cell.json",
    output:
        errors=f"{EPOCH_DIR}/quant_error.parquet",
        sensitivity=f"{EPOCH_DIR}/sensitivity.parquet",
        summary=f"{EPOCH_DIR}/sensitivity_summary.json",
    log:
        f"{EPOCH_DIR}/logs/quant_sensitivity.log",
    benchmark:
        f"{EPOCH_DIR}/benchmarks/quant_sensitivity.tsv"
    conda:
        "../envs/tensorflow.yaml"
    threads: analysis_resource("threads")
    resources:
        mem_mb=analysis_resource("mem_mb"),
        runtime=analysis_resource("runtime"),
        gpu=analysis_resource("gpu"),
    params:
        code=code_version("quant_sensitivity.py"),
        quantization=config["quantization"],
        num_images=config["sensitivity"]["num_images"],
        qce_epsilon=config["evaluation"]["qce_epsilon"],
    script:
        "../scripts/quant_sensitivity.py"
