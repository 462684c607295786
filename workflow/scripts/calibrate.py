"""Rule calibrate: activation ranges of every quantized tensor of the BN-folded model on N
training images, clipped at the scheme's percentile (0 for min/max calibration). The job
fails if the folded model does not compute what the trained model computes
(analysis.check_folding)."""

import numpy as np

from quantinit.cellfiles import placeholder_rows, scheme_cell, write_table
from quantinit.data import load_dataset
from quantinit.io import start_job
from quantinit.layerfiles import load_folded, load_tensor_kinds
from quantinit.registry import STATUS_DIVERGED
from quantinit.sampling import calibration_indices

start_job(snakemake)
cell = scheme_cell(snakemake.input.cell, snakemake.wildcards.scheme)
kinds = load_tensor_kinds(snakemake.input.weights)
num_samples, percentile = snakemake.params.num_samples, snakemake.params.percentile

if cell["status"] == STATUS_DIVERGED:
    print("cell diverged in training: no calibration, rows carry the status")
    table = placeholder_rows(kinds.items(), "tensor")
else:
    from quantinit.runtime import configure_tensorflow

    configure_tensorflow(snakemake.threads, use_gpu=snakemake.resources.gpu > 0)
    import keras

    from quantinit.analysis import check_folding, folded_model
    from quantinit.calibration import calibrate

    model = keras.models.load_model(snakemake.input.model)
    folded = folded_model(model, load_folded(snakemake.input.weights))
    probe = np.random.default_rng(0).uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    relative = check_folding(model, folded, probe)
    print(f"max |logits difference| after folding: {relative:.3g} of the logits' scale")
    dataset = load_dataset(snakemake.input.dataset)
    indices = calibration_indices(len(dataset.x_train), num_samples, cell["seed"])
    table = calibrate(folded, dataset.x_train[indices], kinds, percentile, snakemake.params.bits)
    for row in table.itertuples():
        print(f"{row.tensor:>16}: min {row.min:.4g} max {row.max:.4g} "
              f"clipped [{row.clip_lo:.4g}, {row.clip_hi:.4g}]")  # fmt: skip
table["num_samples"] = num_samples
table["percentile"] = percentile
write_table(table, "calibration", cell, snakemake.output.calibration)
