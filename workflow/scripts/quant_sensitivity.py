"""Rule quant_sensitivity: per-layer quantization error and per-layer sensitivity of a cell."""

import pandas as pd

from quantinit.io import read_json, redirect_output_to_log, write_json
from quantinit.tables import load_weights, placeholder_rows, write_table

redirect_output_to_log(snakemake.log[0])
cell = read_json(snakemake.input.cell)
layers, _, _ = load_weights(snakemake.input.weights)

if cell["status"] == "diverged":
    print("cell diverged in training: rows carry the status, measurements left empty")
    errors = placeholder_rows(((layer.name, layer.kind) for layer in layers), "layer")
    sensitivity = errors.copy()
    summary = {"most_sensitive": [], "num_images": 0}
else:
    from quantinit.runtime import configure_tensorflow

    configure_tensorflow(snakemake.threads, use_gpu=snakemake.resources.gpu > 0)
    import keras

    from quantinit.data import load_dataset
    from quantinit.sensitivity import (
        most_sensitive,
        quantization_error_table,
        sensitivity_table,
        weight_error_table,
    )
    from quantinit.tables import sensitivity_indices

    dataset = load_dataset(snakemake.input.dataset)
    indices = sensitivity_indices(len(dataset.x_test), snakemake.params.num_images, cell["seed"])
    images, labels = dataset.x_test[indices], dataset.y_test[indices]
    folded = keras.models.load_model(snakemake.input.folded)
    quantization = pd.read_parquet(snakemake.input.quantization)
    activations = quantization[quantization.role == "activation"]
    bounds = {r.tensor: (r.qmin[0], r.qmax[0]) for r in activations.itertuples()}
    scheme = snakemake.params.quantization

    tensor_errors = quantization_error_table(folded, bounds, scheme, images).set_index("tensor")
    weight_errors = weight_error_table(folded, scheme).set_index("layer")
    rows = []
    for layer in layers:
        rows.append(
            {
                "layer": layer.name,
                "order": layer.order,
                "kind": layer.kind,
                "activation": layer.output,
                **tensor_errors.loc[layer.output, ["mse", "mae", "max_abs", "scale"]].to_dict(),
                "rmse_over_scale": tensor_errors.loc[layer.output, "rmse_over_scale"],
                **weight_errors.loc[layer.name].drop(["order", "kind"]).to_dict(),
            }
        )
    errors = pd.DataFrame(rows)
    sensitivity = sensitivity_table(
        folded, bounds, scheme, images, labels, qce_epsilon=snakemake.params.qce_epsilon
    )
    ranked = most_sensitive(sensitivity, k=len(sensitivity))
    sensitivity["rank"] = sensitivity["layer"].map({name: i + 1 for i, name in enumerate(ranked)})
    top = sensitivity.set_index("layer").loc[ranked[:3]]
    summary = {
        "most_sensitive": [
            {"layer": name, "accuracy_drop": float(row.only_drop), "qce": float(row.only_qce)}
            for name, row in top.iterrows()
        ],
        "num_images": len(indices),
    }
    print(errors.to_string(max_cols=10))
    print(sensitivity.to_string(max_cols=14))
    print("most sensitive layers:", summary["most_sensitive"])
    errors["num_images"] = sensitivity["num_images"] = len(indices)

write_table(errors, "quant_error", cell, snakemake.output.errors)
write_table(sensitivity, "sensitivity", cell, snakemake.output.sensitivity)
write_json({**cell, **summary}, snakemake.output.summary)
