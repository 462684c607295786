"""Rule evaluate: the full-integer TFLite model (with the scheme's weight granularity), then
fp32, the scheme's simulated model (also weight-only and activation-only) and TFLite int8 on
the test set; QMSE, QCE, each with its bootstrap interval; the per-image predictions."""

from pathlib import Path

import pandas as pd

from quantinit.cellfiles import scheme_cell, write_table
from quantinit.io import atomic_path, start_job
from quantinit.registry import STATUS_DIVERGED
from quantinit.schemes import no_tflite_reason

start_job(snakemake)
cell = scheme_cell(snakemake.input.cell, snakemake.wildcards.scheme)
settings, scheme = snakemake.params.evaluation, snakemake.params.scheme
tflite_model = b""
no_tflite = no_tflite_reason(scheme, settings["tflite"])

if cell["status"] == STATUS_DIVERGED:
    print("cell diverged in training: metrics left empty")
    row, predictions = {}, pd.DataFrame()
else:
    from quantinit.runtime import configure_tensorflow

    configure_tensorflow(snakemake.threads, use_gpu=snakemake.resources.gpu > 0)
    import keras

    from quantinit.analysis import folded_model
    from quantinit.data import load_dataset
    from quantinit.evaluation import evaluate
    from quantinit.layerfiles import load_folded
    from quantinit.sampling import calibration_indices
    from quantinit.tflite import convert_full_integer

    dataset = load_dataset(snakemake.input.dataset)
    model = keras.models.load_model(snakemake.input.model)
    folded = folded_model(model, load_folded(snakemake.input.weights))
    if no_tflite:
        print(no_tflite)
    else:
        indices = calibration_indices(
            len(dataset.x_train), snakemake.params.calibration_samples, cell["seed"]
        )
        per_channel = scheme["granularity"] == "per_channel"
        tflite_model = convert_full_integer(folded, dataset.x_train[indices], per_channel)
        print(f"TFLite full-integer model: {len(tflite_model)} bytes")
    row, predictions = evaluate(
        model,
        folded,
        pd.read_parquet(snakemake.input.quantization),
        scheme,
        dataset.x_test,
        dataset.y_test,
        batch_size=settings["batch_size"],
        qce_epsilon=settings["qce_epsilon"],
        intervals=settings["intervals"],
        tflite_model=tflite_model,
        tflite_threads=snakemake.threads,
        no_tflite=no_tflite,
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
