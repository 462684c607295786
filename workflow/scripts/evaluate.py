"""Rule evaluate: fp32, simulated quint8 and TFLite int8 on the test set; QMSE, QCE."""

from pathlib import Path

import pandas as pd

from quantinit.io import read_json, redirect_output_to_log
from quantinit.registry import STATUS_DIVERGED
from quantinit.tables import metrics_row, write_table

redirect_output_to_log(snakemake.log[0])
cell = read_json(snakemake.input.cell)
settings = snakemake.params.evaluation

if cell["status"] == STATUS_DIVERGED:
    print("cell diverged in training: metrics left empty")
    row = {}
else:
    from quantinit.runtime import configure_tensorflow

    configure_tensorflow(snakemake.threads, use_gpu=snakemake.resources.gpu > 0)
    import keras

    from quantinit.analysis import build_quantized_model
    from quantinit.data import load_dataset

    dataset = load_dataset(snakemake.input.dataset)
    images, labels = dataset.x_test, dataset.y_test
    batch = settings["batch_size"]
    model = keras.models.load_model(snakemake.input.model)
    p_fp32 = model.predict(images, batch_size=batch, verbose=0)
    quantization = pd.read_parquet(snakemake.input.quantization)
    activations = quantization[quantization.role == "activation"]
    bounds = {r.tensor: (r.qmin[0], r.qmax[0]) for r in activations.itertuples()}
    folded = keras.models.load_model(snakemake.input.folded)
    quantized = build_quantized_model(folded, bounds, snakemake.params.quantization)
    p_quint8 = quantized.predict(images, batch_size=batch, verbose=0)
    p_tflite, tflite_error = None, None
    tflite_model = Path(snakemake.input.tflite).read_bytes()
    if tflite_model:
        from quantinit.tflite import run_tflite

        try:
            p_tflite = run_tflite(tflite_model, images, batch, num_threads=snakemake.threads)
        except RuntimeError as error:
            # LiteRT refuses some degenerate models (e.g. ranges of 1e17 next to all-zero
            # ones in an exploded network): the cell keeps its other metrics.
            tflite_error = str(error)
            print(f"LiteRT could not run the int8 model: {tflite_error}")
    row = metrics_row(labels, p_fp32, p_quint8, p_tflite, settings["qce_epsilon"])
    print(", ".join(f"{k} {v:.4g}" for k, v in row.items()))
    row["tflite_error"] = tflite_error
row["training_reason"] = cell["reason"]
row["exported_epoch"] = cell["exported_epoch"]
write_table(pd.DataFrame([row]), "metrics", cell, snakemake.output.metrics)
