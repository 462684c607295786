"""Rule calibrate: activation ranges of every quantized tensor of the BN-folded network on N
training images, clipped at the scheme's percentile (0 for min/max calibration). The network
runs on the architecture's LiteRT engine: no TensorFlow. (The fold itself is checked
against the trained model by rule evaluate, which fails its job if they differ.)"""

from quantinit.cellfiles import placeholder_rows, scheme_cell, write_table
from quantinit.io import start_job
from quantinit.layerfiles import load_folded, load_tensor_kinds, load_weights
from quantinit.registry import STATUS_DIVERGED

start_job(snakemake)
cell = scheme_cell(snakemake.input.cell, snakemake.wildcards.scheme)
kinds = load_tensor_kinds(snakemake.input.weights)
num_samples, percentile = snakemake.params.num_samples, snakemake.params.percentile

if cell["status"] == STATUS_DIVERGED:
    print("cell diverged in training: no calibration, rows carry the status")
    table = placeholder_rows(kinds.items(), "tensor")
else:
    from quantinit.calibration import calibrate
    from quantinit.data import load_dataset
    from quantinit.engine import Engine
    from quantinit.sampling import calibration_indices

    engine = Engine.load(
        snakemake.input.engine, snakemake.input.manifest, num_threads=snakemake.threads
    )
    engine.check_network(load_weights(snakemake.input.weights)[0], kinds)
    dataset = load_dataset(snakemake.input.dataset)
    indices = calibration_indices(len(dataset.x_train), num_samples, cell["seed"])
    table = calibrate(
        engine,
        load_folded(snakemake.input.weights),
        dataset.x_train[indices],
        kinds,
        percentile,
        snakemake.params.bits,
    )
    for row in table.itertuples():
        print(f"{row.tensor:>16}: min {row.min:.4g} max {row.max:.4g} "
              f"clipped [{row.clip_lo:.4g}, {row.clip_hi:.4g}]")  # fmt: skip
table["num_samples"] = num_samples
table["percentile"] = percentile
write_table(table, "calibration", cell, snakemake.output.calibration)
