"""Rule fold_bn: fold every BatchNorm into the layer before it (Eq. 3); check equivalence
(the job fails if the folded model's logits differ from the trained model's)."""

import numpy as np

from quantinit.cellfiles import save_weights
from quantinit.io import atomic_path, read_json, start_job
from quantinit.registry import STATUS_DIVERGED

start_job(snakemake)

from quantinit.runtime import configure_tensorflow  # noqa: E402

configure_tensorflow(snakemake.threads, use_gpu=snakemake.resources.gpu > 0)

import keras  # noqa: E402 - after the redirect, so TensorFlow's messages reach the log

from quantinit.analysis import check_folding, fold_model, kernel_layers  # noqa: E402

cell = read_json(snakemake.input.cell)
model = keras.models.load_model(snakemake.input.model)
layers = kernel_layers(model)
folded, folded_weights = fold_model(model)
trained = {layer.name: model.get_layer(layer.name).get_weights()[0] for layer in layers}
folded_bn = [layer.name for layer in layers if layer.batchnorm]
print(f"folded {len(folded_bn)} BatchNorm layers into {folded_bn or 'none'}")

if cell["status"] != STATUS_DIVERGED:  # the job fails if folding changed what it computes
    probe = np.random.default_rng(0).uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    relative = check_folding(model, folded, probe)
    print(f"max |logits difference| after folding: {relative:.3g} of the logits' scale")

with atomic_path(snakemake.output.model) as tmp:
    folded.save(tmp)
save_weights(snakemake.output.weights, layers, trained, folded_weights)
