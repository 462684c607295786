import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import min_version, validate

min_version("9.0")


# The repository this file belongs to, wherever the workflow is run from: the top-level
# Snakefile, workflow/Snakefile, or another workflow that uses this one as a module.
REPOSITORY = Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parents[1]
LIBRARY = str(REPOSITORY / "src")

# Constraints across keys (sample counts vs the data set's size, ...) are checked here too,
# before the DAG is built; this process imports the library from src/ for that and for
# the rules' code hashes.
if LIBRARY not in sys.path:
    sys.path.insert(0, LIBRARY)
from quantinit.config_checks import (
    ConfigError,
    canonical,
    check_config,
    check_moved_keys,
    study_schema_file,
)
from quantinit.provenance import LibraryMismatch, check_installed_library, code_hashes
from quantinit.registry import ARCHITECTURES, INITIALIZERS
from quantinit.schemes import clipping_percentile
from quantinit.variants import (
    REFERENCE_DIR,
    analyzed_epochs,
    variant_dirs,
    variant_training,
)

try:
    check_moved_keys(config)  # a key an older version had: say where it went
    # config/schema.yaml, with the registry's names and Table 1's settings filled in
    with study_schema_file(REPOSITORY / "config" / "schema.yaml") as schema:
        validate(config, schema)
    check_config(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None
# plain dicts in one key order, whichever file a setting came from (config_checks.canonical)
config.update(canonical(config))

# Jobs import the library from their software environment: the one Snakemake runs in
# (`make setup` installs the package into .venv), or with --sdm conda the env built from
# workflow/envs/*.yaml, whose pip line installs the package from QUANTINIT_SOURCE. Each job
# checks that what it imported is this repository's library (quantinit.io.start_job);
# without conda that is checked once, when the run starts (not in a dry run), before any job.
os.environ.update(QUANTINIT_SOURCE=str(REPOSITORY))


onstart:
    if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
        try:
            check_installed_library(sys.executable, Path(LIBRARY) / "quantinit")
        except LibraryMismatch as error:
            raise WorkflowError(str(error)) from None


SCRIPTS = REPOSITORY / "workflow" / "scripts"
CODE_HASHES = code_hashes(sorted(SCRIPTS.glob("*.py")))

RESULTS = config["results_dir"]
STATE = config["state_dir"]
# Training variants by their path segment: "" for the reference (the training section),
# "variants/<name>/" for each override (quantinit.variants)
VARIANTS = variant_dirs(config["variants"])
REFERENCE_VARIANT = REFERENCE_DIR
VARIANT_TRAINING = {
    folder: variant_training(config["training"], config["variants"], name)
    for folder, name in VARIANTS.items()
}
# the reference's analysed epochs: Table 2's, the paper's figures'
ANALYZE_EPOCHS = analyzed_epochs(config["training"])

CELL = f"{RESULTS}/{{variant_dir}}{{arch}}/{{init}}/seed{{seed}}"
TRAIN_DIR = f"{CELL}/train"
EPOCH_DIR = f"{CELL}/epoch{{epoch}}"
# one quantization scheme's analysis of a checkpoint
Q_DIR = f"{EPOCH_DIR}/q/{{scheme}}"
SCHEMES = {scheme["name"]: scheme for scheme in config["quantization"]["schemes"]}
TABLE2_SCHEME = config["quantization"]["table2"]
DATASET = f"{RESULTS}/data/dataset.npz"
# an architecture's LiteRT engine (.tflite and .json), shared by all its cells
ENGINE = f"{RESULTS}/engines/{{arch}}"
STUDY = f"{RESULTS}/study"
# shipped with the workflow, so found relative to it, not to the working directory
PAPER_TABLE2 = str(REPOSITORY / "reference" / "paper_table2.csv")
FIGURES = f"{STUDY}/figures"


wildcard_constraints:
    arch="|".join(ARCHITECTURES),
    init="|".join(INITIALIZERS),
    seed=r"\d+",
    epoch=r"\d+",
    scheme="|".join(SCHEMES),
    # (?:...): with the reference alone the alternation is "", which Snakemake would replace
    # by its default ".+"; then no rule makes the reference's files and a dry run calls
    # them up to date instead of planning them
    variant_dir="(?:" + "|".join(re.escape(folder) for folder in VARIANTS) + ")",


def cells():
    """Every (arch, init, seed) of the configured study."""
    return [
        dict(arch=a, init=i, seed=s)
        for a in config["architectures"]
        for i in config["initializers"]
        for s in config["seeds"]
    ]


def expand_cells(pattern, schemes=(TABLE2_SCHEME,), variants=(REFERENCE_VARIANT,)):
    """`pattern` filled for every configured cell in each of `variants` (path segments;
    default: the reference), every epoch the variant analyses and each of `schemes`
    (default: Table 2's) if it has them."""
    schemes = schemes if "{scheme}" in pattern else [None]
    return [
        pattern.format(**cell, variant_dir=folder, epoch=epoch, scheme=scheme)
        for folder in variants
        for cell in cells()
        for epoch in variant_epochs(folder, pattern)
        for scheme in schemes
    ]


def variant_epochs(folder, pattern="{epoch}"):
    """The epochs the variant at path segment `folder` analyses ([None] if `pattern` has no
    epoch)."""
    if "{epoch}" not in pattern:
        return [None]
    return analyzed_epochs(VARIANT_TRAINING[folder])


def variant_name(wildcards):
    return VARIANTS[wildcards.variant_dir]


def scheme_table_names():
    """The per-cell tables collected in every scheme (study/schemes/<name>.parquet)."""
    names = ["metrics", "layerwise"]
    if config["sensitivity"]["enabled"]:
        names += ["quant_error", "sensitivity"]
    return names


def scheme_settings(wildcards):
    """The job's quantization scheme, every setting filled (config quantization.schemes)."""
    return SCHEMES[wildcards.scheme]


def scheme_percentile(wildcards):
    """The percentile at which the job's scheme clips activations (0 = min/max)."""
    return clipping_percentile(SCHEMES[wildcards.scheme])


def scheme_bits(wildcards):
    return SCHEMES[wildcards.scheme]["bits"]


def init_settings(wildcards):
    """Only this cell's initializer settings, so editing one reruns only its cells."""
    return config["initializer_settings"].get(wildcards.init, {})


def code_version(script):
    """A hash of `script` and of every library module it imports, the `code` param of its
    job. Snakemake's code trigger sees only the script; through this param a change in the
    library reruns the jobs whose code it is (and what follows them)."""
    return CODE_HASHES[SCRIPTS / script]


def train_resource(name):
    return config["resources"]["train"][name]


def analysis_resource(name):
    return config["resources"]["analysis"][name]


def cell_pairs(key, section="aggregate"):
    """The (arch, init) pairs listed under <section>.<key>."""
    return [(cell["arch"], cell["init"]) for cell in config[section][key]]


def selected_cells(key, pattern):
    """`pattern` for every seed and analysed epoch of the cells listed under aggregate.<key>,
    in Table 2's scheme."""
    return [
        pattern.format(
            variant_dir=REFERENCE_VARIANT,
            arch=arch,
            init=init,
            seed=seed,
            epoch=epoch,
            scheme=TABLE2_SCHEME,
        )
        for arch, init in cell_pairs(key)
        for seed in config["seeds"]
        for epoch in ANALYZE_EPOCHS
    ]


def study_outputs():
    """Study-level tables and figures."""
    dynamics = [
        f"{FIGURES}/dynamics_{arch}_{init}.{ext}"
        for arch, init in cell_pairs("dynamics_cells")
        for ext in ("png", "pdf")
    ]
    sensitivity = []
    if config["sensitivity"]["enabled"]:
        sensitivity = [f"{STUDY}/most_sensitive.md"] + [
            f"{FIGURES}/sensitivity_{arch}_{init}.{ext}"
            for arch, init in cell_pairs("figure_cells", section="sensitivity")
            for ext in ("png", "pdf")
        ]
    return [
        *sensitivity,
        f"{STUDY}/table2.md",
        f"{STUDY}/comparison.md",
        f"{STUDY}/quantization_split.md",
        f"{STUDY}/claims.md",
        f"{STUDY}/schemes.md",
        f"{STUDY}/variants.md",
        f"{FIGURES}/variants.png",
        f"{FIGURES}/schemes.png",
        *(f"{STUDY}/schemes/{name}.parquet" for name in scheme_table_names()),
        f"{FIGURES}/figure2_vanishing_act.png",
        f"{FIGURES}/figure3_layerwise.png",
        f"{FIGURES}/degradation_heatmap.png",
        f"{FIGURES}/accuracy_vs_epoch.png",
        *dynamics,
    ]


def cell_files(wildcards, name):
    """One cell's <name>.parquet for every configured seed and analysed epoch, in Table 2's
    scheme."""
    return [
        f"{Q_DIR}/{name}.parquet".format(
            variant_dir=REFERENCE_VARIANT,
            arch=wildcards.arch,
            init=wildcards.init,
            seed=seed,
            epoch=epoch,
            scheme=TABLE2_SCHEME,
        )
        for seed in config["seeds"]
        for epoch in ANALYZE_EPOCHS
    ]
