"""Rule prepare_data: load the configured source once into the cached dataset file."""

from quantinit.data import check_dataset, load_source, save_dataset
from quantinit.io import start_job, write_json

start_job(snakemake)
data_config = snakemake.params.data
print(f"loading data source {data_config['source']!r}", flush=True)
dataset = load_source(data_config)
report = check_dataset(dataset)
print(
    f"train: {report['train_samples']} images, per class {report['train_class_counts']}\n"
    f"test: {report['test_samples']} images, per class {report['test_class_counts']}\n"
    f"balanced: {report['balanced']}",
    flush=True,
)
metadata = save_dataset(dataset, snakemake.output.dataset)
write_json({**metadata, "checks": report}, snakemake.output.metadata)
print(f"wrote {snakemake.output.dataset} (sha256 {metadata['checksum']})")
