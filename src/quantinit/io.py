"""Atomic file output and log redirection for rule scripts (stdlib, pandas lazily)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    The temporary name keeps the suffix, so writers that check extensions (".keras",
    ".parquet") accept it. On error the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    # mkstemp creates the file private (0600); give it the permissions a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


PROVENANCE_KEY = "quantinit_provenance"


def write_json(data, path) -> None:
    """Write `data` as JSON; a dict gets the writing code's provenance under PROVENANCE_KEY."""
    if isinstance(data, dict):
        from quantinit.provenance import provenance

        data = {**data, PROVENANCE_KEY: provenance()}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())


def write_parquet(frame, path) -> None:
    """Write `frame` without its index; the file's metadata holds the code's provenance."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from quantinit.provenance import provenance

    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), PROVENANCE_KEY.encode(): json.dumps(provenance())}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)


def read_provenance(path) -> dict | None:
    """The provenance stored in a Parquet or JSON output (None if it has none)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        stored = (pq.read_schema(path).metadata or {}).get(PROVENANCE_KEY.encode())
        return json.loads(stored) if stored else None
    return read_json(path).get(PROVENANCE_KEY)


def copy_file(source, path) -> None:
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)


def copy_tree(source, path) -> None:
    """Copy a folder to `path` via a temporary sibling, so `path` is whole or absent."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def start_job(snakemake) -> None:
    """What every rule script does first: output to the job's log (redirect_output_to_log),
    then a check that the library this job imported is the workflow's own
    (provenance.check_library; `snakemake.scriptdir` is the workflow's scripts folder)."""
    from quantinit.provenance import check_library

    redirect_output_to_log(snakemake.log[0])
    check_library(Path(snakemake.scriptdir).parents[1] / "src" / "quantinit")


def redirect_output_to_log(log_path) -> None:
    """Send this process's stdout and stderr (also of C++ code, e.g. TensorFlow) to the log.

    Line-buffered, so `tail -f` on a rule's log shows progress as it happens. Every rule
    script calls this first, before anything imports TensorFlow, so it also sets
    TF_CPP_MIN_LOG_LEVEL=2 unless it is set already (set it to 0 to see everything):
    TensorFlow's C++ INFO and WARNING start-up lines (CPU instructions, CUDA and TensorRT
    look-ups) stay out of the log, its errors stay in (quantinit.runtime.import_tensorflow
    also drops those TensorFlow writes before it reads that setting).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log_file = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        stream.flush()
        os.dup2(log_file.fileno(), fd)
    sys.stdout = sys.stderr = log_file
