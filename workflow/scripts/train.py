"""Rule train: train one cell (finishing an interrupted run from its state), write outputs."""

import functools
import shutil
import sys

import pandas as pd

from quantinit.data import load_dataset
from quantinit.io import copy_tree, read_json, start_job, write_json, write_parquet
from quantinit.training import (
    TrainingTerminated,
    fingerprint,
    locked_state,
    state_folder,
    train_cell,
)

start_job(snakemake)

from quantinit.models import build_model  # noqa: E402
from quantinit.runtime import configure_tensorflow  # noqa: E402

# after the redirect, so TensorFlow's messages reach the log
configure_tensorflow(snakemake.threads, use_gpu=snakemake.resources.gpu > 0)

arch, init, seed = snakemake.wildcards.arch, snakemake.wildcards.init, int(snakemake.wildcards.seed)
variant = snakemake.params.variant
model_config, training = snakemake.params.model, snakemake.params.training
data_checksum = read_json(snakemake.input.metadata)["checksum"]
dataset = load_dataset(snakemake.input.dataset)

# Every parameter of the rule (its code hash included) and the data: whatever makes
# Snakemake rerun this job also gives it a fresh state folder.
run = {
    "arch": arch,
    "init": init,
    "seed": seed,
    "data_checksum": data_checksum,
    **{name: value for name, value in snakemake.params.items() if name != "state_dir"},
}
print(f"cell {arch} / {init} / seed {seed}, training variant {variant}", flush=True)
build_core = functools.partial(
    build_model,
    arch,
    init,
    seed,
    init_settings=snakemake.params.init_settings,
    first_conv=model_config["first_conv"],
    stages=model_config["stages"],
    dense=model_config["dense"],
    width_multiplier=model_config["width_multiplier"],
    bn_momentum=model_config["bn_momentum"],
    bn_epsilon=model_config["bn_epsilon"],
    expansion=model_config["expansion"],
)
dynamics_settings = snakemake.params.dynamics
record_dynamics = None
if dynamics_settings["enabled"]:
    from quantinit.analysis import LayerDynamics
    from quantinit.sampling import calibration_indices

    probe_size = dynamics_settings["probe_samples"]  # <= the training set: checked in the DAG
    probe = dataset.x_train[calibration_indices(len(dataset.x_train), probe_size, seed + 1)]

    def record_dynamics(core):
        return LayerDynamics(core, probe, dynamics_settings["percentile"])


run_fingerprint = fingerprint(run)
state_dir = state_folder(snakemake.params.state_dir, run_fingerprint)
with locked_state(state_dir):
    print(f"training state: {state_dir}", flush=True)
    try:
        result = train_cell(
            build_core,
            dataset.x_train,
            dataset.y_train,
            dataset.x_test,
            dataset.y_test,
            training=training,
            seed=seed,
            state_dir=state_dir,
            run_fingerprint=run_fingerprint,
            analyze_epochs=snakemake.params.analyze_epochs,
            dynamics=record_dynamics,
        )
    except TrainingTerminated as stopped:
        print(stopped, flush=True)
        sys.exit(128 + 15)  # as if killed by SIGTERM: the job fails, a retry resumes
    dynamics = pd.DataFrame(result.pop("dynamics"))

    keys = {"variant": variant, "arch": arch, "init": init, "seed": seed}
    history = pd.DataFrame(result.pop("history")).assign(**keys)
    copy_tree(state_dir / "snapshots", snakemake.output.snapshots)
    write_parquet(history, snakemake.output.history)
    write_parquet(dynamics.assign(**keys), snakemake.output.dynamics)
    write_json({**keys, "data_checksum": data_checksum, **result}, snakemake.output.status)
    # The state served only to finish an interrupted run: a rerun of this finished job
    # (changed input, --forcerun) must train from scratch.
    shutil.rmtree(state_dir)
    print(f"outputs written; training state {state_dir} removed", flush=True)
