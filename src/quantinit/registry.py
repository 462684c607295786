"""The study's names, defined once: architectures, initializers and cell statuses.

Everything else reads them: the models and initializers, the workflow's wildcard
constraints and config checks, the aggregation's row order, the figures and the benchmark.
Adding an initializer is one `Initializer` entry here (plus its test in
tests/test_initializers.py); adding an architecture is one `Architecture` entry plus the
layers it builds in quantinit.models. Standard library only: the Snakefile imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# What a trained cell is; every later stage carries it in its rows.
STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"
STATUS_NOT_LEARNING = "not_learning"
STATUSES = (STATUS_OK, STATUS_DIVERGED, STATUS_NOT_LEARNING)

# Classes of the data set (CIFAR-10's ten): the models' output width, data.classes' length.
NUM_CLASSES = 10


# The blocks a stage of the macro-architecture is built from (quantinit.models.layer_plan)
BLOCKS = (
    "conv",  # 3x3 conv -> ReLU (the paper's Regular_Conv_*)
    "separable",  # depthwise 3x3 -> ReLU -> pointwise 1x1 -> ReLU (the paper's DWS_Conv_*)
    "residual",  # two 3x3 convs, identity or 1x1-projection shortcut, Add -> ReLU (ResNet basic)
    "inverted_residual",  # 1x1 expand -> depthwise 3x3 -> linear 1x1 project (+ identity Add)
)


@dataclass(frozen=True)
class Architecture:
    """A variant of the paper's Figure 1 macro-architecture: the same stages, widths, pools
    and dense head, built from one kind of block."""

    name: str
    block: str  # one of BLOCKS
    batchnorm: bool  # BatchNormalization after every conv
    paper: bool = True  # one of the paper's Figure 1 four (the default study)

    @property
    def separable(self) -> bool:
        return self.block == "separable"


@dataclass(frozen=True)
class Initializer:
    """A weight initializer of the paper's Table 1 as a Keras initializer.

    `keras_class` (a class in keras.initializers) is built with `keras_arguments(settings)`
    and a seed; `defaults` are Table 1's hyperparameters, which the config can override;
    `family` groups names as the paper's Table 2 sorts them.
    """

    name: str
    family: str
    keras_class: str
    defaults: dict = field(default_factory=dict)

    def keras_arguments(self, settings: dict) -> dict:
        if self.family == "RandNorm":
            return {"mean": 0.0, "stddev": settings["stddev"]}
        if self.family == "RandUni":
            return {"minval": -settings["limit"], "maxval": settings["limit"]}
        if self.family == "ModGlorot":
            # +-sqrt(C / (fan_in + fan_out)) (Eq. 4) = VarianceScaling's uniform
            # +-sqrt(3 * scale / ((fan_in + fan_out) / 2)) with scale = C / 6
            return {"scale": settings["C"] / 6.0, "mode": "fan_avg", "distribution": "uniform"}
        return {}


# Figure 1's order, then the sequel's
ARCHITECTURES = {
    arch.name: arch
    for arch in (
        Architecture("Regular_Conv_With_BN", "conv", batchnorm=True),
        Architecture("Regular_Conv_No_BN", "conv", batchnorm=False),
        Architecture("DWS_Conv_With_BN", "separable", batchnorm=True),
        Architecture("DWS_Conv_No_BN", "separable", batchnorm=False),
        # the block types of the paper's sequel (Yun and Wong, "Starting Positions Matter")
        Architecture("Residual_With_BN", "residual", batchnorm=True, paper=False),
        Architecture("Residual_No_BN", "residual", batchnorm=False, paper=False),
        Architecture("InvResidual_With_BN", "inverted_residual", batchnorm=True, paper=False),
        Architecture("InvResidual_No_BN", "inverted_residual", batchnorm=False, paper=False),
    )
}
# The paper's four: the default study's architectures
PAPER_ARCHITECTURES = [name for name, arch in ARCHITECTURES.items() if arch.paper]

# Table 1's order
INITIALIZERS = {
    init.name: init
    for init in (
        Initializer("RandNorm_Large", "RandNorm", "RandomNormal", {"stddev": 1.0}),
        Initializer("RandNorm_Med", "RandNorm", "RandomNormal", {"stddev": 0.5}),
        Initializer("RandNorm_Small", "RandNorm", "RandomNormal", {"stddev": 0.1}),
        Initializer("RandUni_Large", "RandUni", "RandomUniform", {"limit": 1.0}),
        Initializer("RandUni_Med", "RandUni", "RandomUniform", {"limit": 0.5}),
        Initializer("RandUni_Small", "RandUni", "RandomUniform", {"limit": 0.25}),
        Initializer("ModGlorotUni_Large", "ModGlorot", "VarianceScaling", {"C": 1296}),
        Initializer("ModGlorotUni_Med", "ModGlorot", "VarianceScaling", {"C": 36}),
        Initializer("GlorotUni", "Glorot", "GlorotUniform"),
        Initializer("GlorotNorm", "Glorot", "GlorotNormal"),
        Initializer("HeUni", "He", "HeUniform"),
        Initializer("HeNorm", "He", "HeNormal"),
    )
}

# The paper's Table 2 sorts architectures by name and initializers by family in this
# order, then by name; a family not listed here comes last.
TABLE2_FAMILY_ORDER = ("Glorot", "ModGlorot", "He", "RandNorm", "RandUni")


def table2_order() -> tuple[list[str], list[str]]:
    """(architectures, initializers) in the order of the paper's Table 2."""
    families = {family: rank for rank, family in enumerate(TABLE2_FAMILY_ORDER)}
    inits = sorted(
        INITIALIZERS.values(), key=lambda i: (families.get(i.family, len(families)), i.name)
    )
    return sorted(ARCHITECTURES), [init.name for init in inits]


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def initializer(name: str) -> Initializer:
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; allowed: {', '.join(INITIALIZERS)}")
    return INITIALIZERS[name]
