"""Rule calibrate: activation ranges of every quantized tensor on N training images."""

from quantinit.data import load_dataset
from quantinit.io import read_json, redirect_output_to_log
from quantinit.registry import STATUS_DIVERGED
from quantinit.tables import (
    calibration_indices,
    calibration_table,
    load_weights,
    placeholder_rows,
    tensor_kinds,
    write_table,
)

redirect_output_to_log(snakemake.log[0])
cell = read_json(snakemake.input.cell)
layers, _, _ = load_weights(snakemake.input.weights)
kinds = tensor_kinds(layers)
settings = snakemake.params.calibration

if cell["status"] == STATUS_DIVERGED:
    print("cell diverged in training: no calibration, rows carry the status")
    table = placeholder_rows(kinds.items(), "tensor")
else:
    from quantinit.runtime import configure_tensorflow

    configure_tensorflow(snakemake.threads, use_gpu=snakemake.resources.gpu > 0)
    import keras

    from quantinit.analysis import capture

    dataset = load_dataset(snakemake.input.dataset)
    indices = calibration_indices(len(dataset.x_train), settings["num_samples"], cell["seed"])
    model = keras.models.load_model(snakemake.input.model)
    activations = capture(model, dataset.x_train[indices], list(kinds))
    table = calibration_table(activations, kinds, settings["percentile"], snakemake.params.bits)
    for row in table.itertuples():
        print(f"{row.tensor:>16}: min {row.min:.4g} max {row.max:.4g} "
              f"clipped [{row.clip_lo:.4g}, {row.clip_hi:.4g}]")  # fmt: skip
table["num_samples"] = settings["num_samples"]
table["percentile"] = settings["percentile"]
write_table(table, "calibration", cell, snakemake.output.calibration)
