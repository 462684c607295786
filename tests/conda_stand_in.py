#!/usr/bin/env python3
"""A stand-in for the `conda` command, for tests/test_envs.py (conda's channels cannot be
reached here).

It answers what Snakemake's --sdm conda asks of conda: `--version`, `info --json`,
`config --get channel_priority --json`, `env create --file F --prefix P` and `clean`.
`env create` builds P as a venv of this machine's Python, after checking that the env file
asks for that Python, and installs the env file's pip section as conda does: the lines are
written to a requirements file beside F and `pip install -U -r` runs in F's folder. So the
env file's pip section is what is tested; its conda packages (python, pip) are this
machine's. Snakemake activates an env with `source <root>/bin/activate <env>`; this root's
`activate` sources the venv's own.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

# written by the test into <root>/bin/conda: exec python conda_stand_in.py ROOT BASE_PYTHON "$@"
ROOT, BASE_PYTHON = sys.argv[1:3]


def env_create(arguments: list[str]) -> None:
    import yaml

    env_file = Path(arguments[arguments.index("--file") + 1])
    prefix = Path(arguments[arguments.index("--prefix") + 1])
    spec = yaml.safe_load(env_file.read_text())
    pip_lines, python = [], None
    for dependency in spec["dependencies"]:
        if isinstance(dependency, dict):
            pip_lines += dependency["pip"]
        elif dependency.startswith("python="):
            python = dependency.split("=", 1)[1]
    have = subprocess.run(
        [BASE_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if python != have:
        sys.exit(f"{env_file} asks for python={python}; this stand-in has {have}")
    subprocess.run([BASE_PYTHON, "-m", "venv", str(prefix)], check=True)
    with tempfile.NamedTemporaryFile(
        "w", prefix="condaenv.", suffix=".requirements.txt", dir=env_file.parent, delete=False
    ) as requirements:
        requirements.write("\n".join(pip_lines) + "\n")
    try:
        subprocess.run(
            [str(prefix / "bin" / "python"), "-m", "pip", "install", "--quiet", "-U",
             "-r", requirements.name],
            cwd=env_file.parent, check=True,
        )  # fmt: skip
    finally:
        Path(requirements.name).unlink()


def main(arguments: list[str]) -> None:
    if arguments == ["--version"]:
        print("conda 25.1.1")
    elif arguments[:2] == ["info", "--json"]:
        print(json.dumps({"conda_prefix": ROOT, "platform": "linux-64"}))
    elif arguments[:2] == ["config", "--get"]:
        print(json.dumps({"get": {"channel_priority": "strict"}}))
    elif arguments[:2] == ["env", "create"]:
        env_create(arguments[2:])
    elif arguments[0] == "clean":
        pass  # no package tarballs: pip's wheels are pip's

    else:
        sys.exit(f"conda stand-in: not implemented: {arguments}")


if __name__ == "__main__":
    main(sys.argv[3:])
