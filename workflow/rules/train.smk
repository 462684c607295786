rule train:
    input:
        dataset=DATASET,
        metadata=f"{RESULTS}/data/dataset.json",
    output:
        history=f"{TRAIN_DIR}/history.parquet",
        status=f"{TRAIN_DIR}/status.json",
        dynamics=f"{TRAIN_DIR}/dynamics.parquet",
        snapshots=directory(f"{TRAIN_DIR}/snapshots"),
    log:
        f"{TRAIN_DIR}/train.log",
    benchmark:
        f"{TRAIN_DIR}/benchmark.tsv"
    conda:
        "../envs/tensorflow.yaml"
    threads: train_resource("threads")
    resources:
        mem_mb=train_resource("mem_mb"),
        runtime=train_resource("runtime"),
        gpu=train_resource("gpu"),
    params:
        code=code_version("train.py"),
        init_settings=init_settings,
        model=config["model"],
        variant=variant_name,
        training=lambda wc: VARIANT_TRAINING[wc.variant_dir],
        analyze_epochs=lambda wc: variant_epochs(wc.variant_dir),
        dynamics=config["dynamics"],
        state_dir=lambda wc: f"{STATE}/{wc.variant_dir}{wc.arch}/{wc.init}/seed{wc.seed}",
    script:
        "../scripts/train.py"


rule export_checkpoint:
    input:
        status=f"{TRAIN_DIR}/status.json",
        snapshots=f"{TRAIN_DIR}/snapshots",
    output:
        model=f"{EPOCH_DIR}/model.keras",
        layers=f"{EPOCH_DIR}/layers.npz",
        cell=f"{EPOCH_DIR}/cell.json",
    log:
        f"{EPOCH_DIR}/logs/export_checkpoint.log",
    benchmark:
        f"{EPOCH_DIR}/benchmarks/export_checkpoint.tsv"
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=500,
        runtime=5,
    params:
        code=code_version("export_checkpoint.py"),
    script:
        "../scripts/export_checkpoint.py"
