rule prepare_data:
    output:
        dataset=DATASET,
        metadata=f"{RESULTS}/data/dataset.json",
    log:
        f"{RESULTS}/logs/prepare_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data.tsv"
    conda:
        # Keras' CIFAR-10 downloader (data.source: keras)
        "../envs/tensorflow.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        code=code_version("prepare_data.py"),
        data=config["data"],
    script:
        "../scripts/prepare_data.py"
