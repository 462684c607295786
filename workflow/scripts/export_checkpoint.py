"""Rule export_checkpoint: export one cell's model at one analysed epoch, as a Keras file and
as its layers for the numpy-only stages (no TensorFlow)."""

from pathlib import Path

from quantinit.io import copy_file, read_json, start_job, write_json
from quantinit.registry import STATUS_DIVERGED
from quantinit.training import snapshot_layers_path

start_job(snakemake)
status = read_json(snakemake.input.status)
epoch = int(snakemake.wildcards.epoch)
snapshots = Path(snakemake.input.snapshots)
snapshot = snapshots / f"epoch{epoch}.keras"
exported_epoch = epoch
if not snapshot.exists():
    if status["status"] != STATUS_DIVERGED or not (snapshots / "last.keras").exists():
        available = sorted(p.name for p in snapshots.glob("*.keras"))
        raise FileNotFoundError(
            f"no model saved at epoch {epoch} in {snapshots} (have: {available}); add the "
            "epoch to training.analyze_epochs and rerun training"
        )
    # A diverged run stopped before this epoch: export its last finite state, marked as such.
    snapshot = snapshots / "last.keras"
    exported_epoch = status["epochs_completed"]
print(f"exporting {snapshot} (epoch {exported_epoch}, status {status['status']})")
layers = snapshot_layers_path(snapshot)
if not layers.exists():
    raise FileNotFoundError(
        f"{snapshot} has no {layers.name} beside it (trained by an older version of this "
        f"workflow): rerun this cell's training, e.g. --forcerun train"
    )
copy_file(snapshot, snakemake.output.model)
copy_file(layers, snakemake.output.layers)
write_json(
    {
        "variant": status["variant"],
        "arch": status["arch"],
        "init": status["init"],
        "seed": status["seed"],
        "epoch": epoch,
        "exported_epoch": exported_epoch,
        "status": status["status"],
        "reason": status["reason"],
    },
    snakemake.output.cell,
)
