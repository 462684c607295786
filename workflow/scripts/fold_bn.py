"""Rule fold_bn: fold every BatchNorm into the layer before it (Eq. 3), numpy only.

The folded network is checked where it first runs: calibrate fails its job if the folded
model's logits differ from the trained model's (analysis.check_folding)."""

from quantinit.analysis import fold_weights, kernel_layers_of, quantized_tensors_of
from quantinit.io import start_job
from quantinit.layerfiles import load_layers, save_weights

start_job(snakemake)
specs, weights = load_layers(snakemake.input.layers)
layers = kernel_layers_of(specs)
folded = fold_weights(specs, weights, layers)
trained = {layer.name: weights[layer.name][0] for layer in layers}
folded_bn = [layer.name for layer in layers if layer.batchnorm]
print(f"folded {len(folded_bn)} BatchNorm layers into {folded_bn or 'none'}")
save_weights(snakemake.output.weights, layers, trained, folded, quantized_tensors_of(specs))
