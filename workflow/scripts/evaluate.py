"""Rule evaluate: the full-integer TFLite model (with the scheme's weight granularity), then
fp32, the scheme's simulated model (also weight-only and activation-only, on the
architecture's LiteRT engine) and TFLite int8 on the test set; QMSE, QCE, each with its
bootstrap interval; the per-image predictions. The one TensorFlow stage after training:
it converts the int8 model and checks the BN fold against the trained model (the job fails
if they differ)."""

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
    import numpy as np

    from quantinit.analysis import folded_model
    from quantinit.data import load_dataset
    from quantinit.engine import Engine, QuantizedNetwork
    from quantinit.evaluation import check_fold, evaluate
    from quantinit.layerfiles import load_folded, load_tensor_kinds, load_weights
    from quantinit.sampling import calibration_indices
    from quantinit.tables import quantized_activation_bounds
    from quantinit.tflite import convert_full_integer

    dataset = load_dataset(snakemake.input.dataset)
    model = keras.models.load_model(snakemake.input.model)
    folded = load_folded(snakemake.input.weights)
    engine = Engine.load(
        snakemake.input.engine, snakemake.input.manifest, num_threads=snakemake.threads
    )
    engine.check_network(
        load_weights(snakemake.input.weights)[0], load_tensor_kinds(snakemake.input.weights)
    )
    network = QuantizedNetwork(
        engine,
        folded,
        quantized_activation_bounds(pd.read_parquet(snakemake.input.quantization)),
        scheme,
    )
    probe = np.random.default_rng(0).uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    relative = check_fold(model, network, probe)
    print(f"max |logits difference| after folding: {relative:.3g} of the logits' scale")
    if no_tflite:
        print(no_tflite)
    else:
        indices = calibration_indices(
            len(dataset.x_train), snakemake.params.calibration_samples, cell["seed"]
        )
        per_channel = scheme["granularity"] == "per_channel"
        tflite_model = convert_full_integer(
            folded_model(model, folded), dataset.x_train[indices], per_channel
        )
        print(f"TFLite full-integer model: {len(tflite_model)} bytes")
    row, predictions = evaluate(
        model.predict(dataset.x_test, batch_size=settings["batch_size"], verbose=0),
        network,
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
