"""Rule build_engine: the architecture's LiteRT engine (quantinit.engine), the one network
the TensorFlow-free analysis stages run every cell of this architecture on."""

from quantinit.io import start_job
from quantinit.registry import INITIALIZERS

start_job(snakemake)

from quantinit.runtime import configure_tensorflow  # noqa: E402

configure_tensorflow(snakemake.threads, use_gpu=False)

from quantinit.analysis import fold_model  # noqa: E402
from quantinit.engine import build_engine, save_engine  # noqa: E402
from quantinit.models import build_model  # noqa: E402

arch, model_config = snakemake.wildcards.arch, snakemake.params.model
# Any initializer: the engine's weights are placeholders that each cell overwrites.
model = build_model(
    arch,
    next(iter(INITIALIZERS)),
    0,
    first_conv=model_config["first_conv"],
    stages=model_config["stages"],
    dense=model_config["dense"],
    width_multiplier=model_config["width_multiplier"],
    expansion=model_config["expansion"],
)
flatbuffer, manifest = build_engine(fold_model(model)[0])
print(
    f"{arch}: engine of {len(manifest['layers'])} kernel layers and "
    f"{len(manifest['tensors'])} quantized tensors, {len(flatbuffer)} bytes; "
    "checked against the Keras network"
)
save_engine(flatbuffer, manifest, snakemake.output.engine, snakemake.output.manifest)
