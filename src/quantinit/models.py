"""The paper's VGG-like macro-architecture (its Figure 1), built from one kind of block.

conv1 (regular 3x3, Glorot Uniform) -> stages of blocks, each stage followed by a 2x2
max-pool -> fully connected layers (Glorot Uniform) -> 10 logits -> softmax. A block
(quantinit.registry.BLOCKS) is
- conv: conv3x3 [-> BN] -> ReLU (the paper's Regular_Conv_*);
- separable: depthwise3x3 [-> BN] -> ReLU -> pointwise1x1 [-> BN] -> ReLU (DWS_Conv_*,
  the MobileNet block);
- residual: conv3x3 [-> BN] -> ReLU -> conv3x3 [-> BN], added to the block's input (or to
  its 1x1 projection [-> BN] where the width changes), -> ReLU (ResNet's basic block);
- inverted_residual: pointwise1x1 expanding by `expansion` [-> BN] -> ReLU -> depthwise3x3
  [-> BN] -> ReLU -> pointwise1x1 projecting [-> BN], linear, added to the block's input
  where the shapes match (MobileNetV2's block).
The first conv follows the variant's with/without-BN behaviour. Layers with BatchNorm after
them have no bias.

Layer names are stable and meaningful (conv1, conv1_bn, block2_dw, block2_dw_bn, block2_pw,
block3_conv, block3_bn, block4_conv1, block4_proj, block4_add, fc1, logits ...): every
per-layer table and plot keys on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantinit.registry import NUM_CLASSES, architecture

INPUT_SHAPE = (32, 32, 3)


@dataclass(frozen=True)
class WeightedLayer:
    """A layer with a kernel, in network order."""

    order: int
    name: str
    kind: str  # conv | depthwise | pointwise | dense
    batchnorm: str | None  # name of the BatchNormalization layer after it, if any
    activation: str  # name of the layer whose output is this layer's quantized output


def architecture_traits(arch: str) -> tuple[bool, bool]:
    """(depthwise_separable, batchnorm) of an architecture name."""
    spec = architecture(arch)
    return spec.separable, spec.batchnorm


def scaled_width(width: int, multiplier: float) -> int:
    return max(1, round(width * multiplier))


def unit_output(spec: dict) -> str:
    """The name of the layer whose output is a plan entry's output."""
    return spec.get("relu") or spec.get("bn") or spec["name"]


def layer_plan(
    arch: str,
    first_conv: int = 32,
    stages: tuple[tuple[int, ...], ...] = ((32,), (64, 64), (128, 128)),
    dense: tuple[int, ...] = (512, 256),
    width_multiplier: float = 1.0,
    expansion: int = 6,
) -> list[dict]:
    """The architecture as a list of layer specs in a topological order (no Keras needed).

    Every entry names its `input`: the output (unit_output) of the entry it reads; an `add`
    entry names its two `inputs`. `expansion` is the inverted-residual block's 1x1 widening.
    """
    spec = architecture(arch)
    plan: list[dict] = []
    current = "rescale"

    def conv_unit(name, kind, filters, kernel, initialized, stem=None, relu=True, source=None):
        nonlocal current
        stem = stem or name
        unit = {
            "name": name,
            "kind": kind,
            "filters": filters,
            "kernel": kernel,
            "paper_init": initialized,
            "bn": f"{stem}_bn" if spec.batchnorm else None,
            "relu": f"{stem}_relu" if relu else None,
            "input": source or current,
        }
        plan.append(unit)
        current = unit_output(unit)
        return current

    def add_unit(name, a, b, relu):
        nonlocal current
        unit = {"name": name, "kind": "add", "inputs": [a, b], "relu": relu}
        plan.append(unit)
        current = unit_output(unit)

    channels = scaled_width(first_conv, width_multiplier)
    conv_unit("conv1", "conv", channels, 3, False)
    block = 0
    for stage_index, stage in enumerate(stages, start=1):
        for width in stage:
            block += 1
            filters = scaled_width(width, width_multiplier)
            b = f"block{block}"
            if spec.block == "separable":
                conv_unit(f"{b}_dw", "depthwise", None, 3, True)
                conv_unit(f"{b}_pw", "pointwise", filters, 1, True)
            elif spec.block == "conv":
                conv_unit(f"{b}_conv", "conv", filters, 3, True, stem=b)
            elif spec.block == "residual":
                block_input = current
                conv_unit(f"{b}_conv1", "conv", filters, 3, True)
                body = conv_unit(f"{b}_conv2", "conv", filters, 3, True, relu=False)
                shortcut = block_input
                if channels != filters:
                    shortcut = conv_unit(
                        f"{b}_proj", "pointwise", filters, 1, True, relu=False, source=block_input
                    )
                add_unit(f"{b}_add", body, shortcut, relu=f"{b}_relu")
            elif spec.block == "inverted_residual":
                block_input = current
                conv_unit(f"{b}_expand", "pointwise", channels * expansion, 1, True)
                conv_unit(f"{b}_dw", "depthwise", None, 3, True)
                body = conv_unit(f"{b}_project", "pointwise", filters, 1, True, relu=False)
                if channels == filters:
                    add_unit(f"{b}_add", body, block_input, relu=None)
            else:
                raise ValueError(f"unknown block {spec.block!r} of architecture {arch!r}")
            channels = filters
        plan.append({"name": f"pool{stage_index}", "kind": "pool", "input": current})
        current = f"pool{stage_index}"
    plan.append({"name": "flatten", "kind": "flatten", "input": current})
    current = "flatten"
    for index, width in enumerate(dense, start=1):
        units = scaled_width(width, width_multiplier)
        unit = {"name": f"fc{index}", "kind": "dense", "units": units, "relu": f"fc{index}_relu",
                "input": current}  # fmt: skip
        plan.append(unit)
        current = unit_output(unit)
    plan.append(
        {"name": "logits", "kind": "dense", "units": NUM_CLASSES, "relu": None, "input": current}
    )
    return plan


def build_model(
    arch: str,
    init_name: str,
    seed: int,
    init_settings: dict | None = None,
    first_conv: int = 32,
    stages=((32,), (64, 64), (128, 128)),
    dense=(512, 256),
    width_multiplier: float = 1.0,
    bn_momentum: float = 0.99,
    bn_epsilon: float = 1e-3,
    dtype_policy: str = "float32",
    expansion: int = 6,
):
    """Build one cell's Keras model: uint8-range images in, class probabilities out.

    `init_name` initializes every conv kernel but the first (depthwise and pointwise
    included); conv1 and the dense layers always use Glorot Uniform. Each layer's
    initializer is seeded with seed * 1000 + its order, so layers differ and cells repeat.
    `dtype_policy` (a Keras dtype policy name, e.g. "mixed_float16") applies to every layer
    but the softmax, which stays float32 as mixed-precision training needs; the variables
    are float32 under every policy, so weights move between policies unchanged.
    """
    import keras

    from quantinit.initializers import make_initializer

    plan = layer_plan(
        arch, first_conv, tuple(map(tuple, stages)), tuple(dense), width_multiplier, expansion
    )
    inputs = keras.Input(shape=INPUT_SHAPE, name="image")
    tensors = {
        "rescale": keras.layers.Rescaling(1.0 / 255.0, name="rescale", dtype=dtype_policy)(inputs)
    }
    order = 0
    for spec in plan:
        kind = spec["kind"]
        if kind == "add":
            x = keras.layers.Add(name=spec["name"], dtype=dtype_policy)(
                [tensors[name] for name in spec["inputs"]]
            )
            if spec["relu"]:
                x = keras.layers.ReLU(name=spec["relu"], dtype=dtype_policy)(x)
            tensors[unit_output(spec)] = x
            continue
        x = tensors[spec["input"]]
        if kind == "pool":
            tensors[spec["name"]] = keras.layers.MaxPooling2D(
                2, name=spec["name"], dtype=dtype_policy
            )(x)
            continue
        if kind == "flatten":
            tensors["flatten"] = keras.layers.Flatten(name="flatten", dtype=dtype_policy)(x)
            continue
        layer_seed = seed * 1000 + order
        order += 1
        if kind == "dense":
            x = keras.layers.Dense(
                spec["units"],
                kernel_initializer=keras.initializers.GlorotUniform(seed=layer_seed),
                bias_initializer="zeros",
                name=spec["name"],
                dtype=dtype_policy,
            )(x)
            if spec["relu"]:
                x = keras.layers.ReLU(name=spec["relu"], dtype=dtype_policy)(x)
            tensors[unit_output(spec)] = x
            continue
        init = (
            make_initializer(init_name, layer_seed, init_settings)
            if spec["paper_init"]
            else keras.initializers.GlorotUniform(seed=layer_seed)
        )
        use_bias = spec["bn"] is None
        if kind == "depthwise":
            x = keras.layers.DepthwiseConv2D(
                spec["kernel"],
                padding="same",
                use_bias=use_bias,
                depthwise_initializer=init,
                bias_initializer="zeros",
                name=spec["name"],
                dtype=dtype_policy,
            )(x)
        else:
            x = keras.layers.Conv2D(
                spec["filters"],
                spec["kernel"],
                padding="same",
                use_bias=use_bias,
                kernel_initializer=init,
                bias_initializer="zeros",
                name=spec["name"],
                dtype=dtype_policy,
            )(x)
        if spec["bn"]:
            x = keras.layers.BatchNormalization(
                momentum=bn_momentum, epsilon=bn_epsilon, name=spec["bn"], dtype=dtype_policy
            )(x)
        if spec["relu"]:
            x = keras.layers.ReLU(name=spec["relu"], dtype=dtype_policy)(x)
        tensors[unit_output(spec)] = x
    outputs = keras.layers.Softmax(name="softmax", dtype="float32")(tensors["logits"])
    return keras.Model(inputs, outputs, name=f"{arch}_{init_name}")


def weighted_layers(arch: str, **plan_kwargs) -> list[WeightedLayer]:
    """The layers that carry a kernel, in order, with their BN and output layer names."""
    layers = []
    for spec in layer_plan(arch, **plan_kwargs):
        if spec["kind"] in ("pool", "flatten", "add"):
            continue
        layers.append(
            WeightedLayer(
                order=len(layers),
                name=spec["name"],
                kind=spec["kind"],
                batchnorm=spec.get("bn"),
                activation=spec["relu"] or spec["name"],
            )
        )
    return layers
