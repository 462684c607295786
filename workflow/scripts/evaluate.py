"""Rule evaluate: the full-integer TFLite model, then fp32, simulated quint8 and TFLite int8
on the test set; QMSE, QCE, each with its bootstrap interval; the per-image predictions."""

from pathlib import Path

import pandas as pd

from quantinit.cellfiles import write_table
from quantinit.io import atomic_path, read_json, start_job
from quantinit.registry import STATUS_DIVERGED

start_job(snakemake)
cell = read_json(snakemake.input.cell)
settings = snakemake.params.evaluation
tflite_model = b""

if cell["status"] == STATUS_DIVERGED:
    print("cell diverged in training: metrics left empty")
    row, predictions = {}, pd.DataFrame()
else:
    from quantinit.runtime import configure_tensorflow

    configure_tensorflow(snakemake.threads, use_gpu=snakemake.resources.gpu > 0)
    import keras

    from quantinit.analysis import folded_model
    from quantinit.cellfiles import load_folded
    from quantinit.data import load_dataset
    from quantinit.evaluation import evaluate
    from quantinit.sampling import calibration_indices
    from quantinit.tflite import convert_full_integer

    dataset = load_dataset(snakemake.input.dataset)
    model = keras.models.load_model(snakemake.input.model)
    folded = folded_model(model, load_folded(snakemake.input.weights))
    if settings["tflite"]:
        indices = calibration_indices(
            len(dataset.x_train), snakemake.params.calibration_samples, cell["seed"]
        )
        tflite_model = convert_full_integer(folded, dataset.x_train[indices])
        print(f"TFLite full-integer model: {len(tflite_model)} bytes")
    row, predictions = evaluate(
        model,
        folded,
        pd.read_parquet(snakemake.input.quantization),
        snakemake.params.quantization,
        dataset.x_test,
        dataset.y_test,
        batch_size=settings["batch_size"],
        qce_epsilon=settings["qce_epsilon"],
        intervals=settings["intervals"],
        tflite_model=tflite_model,
        tflite_threads=snakemake.threads,
    )
    if row["tflite_error"]:
        print(f"LiteRT could not run the int8 model: {row['tflite_error']}")
    print(", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "tflite_error"))
    print(
        f"quint8 - fp32: {row['quint8_minus_fp32']:+.2f} points, "
        f"{row['confidence']:.0%} interval [{row['quint8_minus_fp32_lo']:+.2f}, "
        f"{row['quint8_minus_fp32_hi']:+.2f}] ({row['bootstrap_resamples']} resamples "
        f"of the {len(predictions)} test images)"
    )
row["training_reason"] = cell["reason"]
row["exported_epoch"] = cell["exported_epoch"]
write_table(pd.DataFrame([row]), "metrics", cell, snakemake.output.metrics)
write_table(predictions, "predictions", cell, snakemake.output.predictions)
with atomic_path(snakemake.output.tflite) as tmp:
    Path(tmp).write_bytes(tflite_model)
