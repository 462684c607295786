"""The conda environments pin exactly what pyproject.toml pins."""

import re

import tomllib
import yaml

from conftest import REPO


def pins(requirements):
    found = {}
    for line in requirements:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)==([^\s#]+)\s*(#.*)?", line)
        assert match, f"not an exact pin: {line!r}"
        found[match.group(1).lower()] = match.group(2)
    return found


def test_every_env_pin_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = pins(project["dependencies"])
    env_files = sorted((REPO / "envs").glob("*.yaml"))
    assert env_files
    for env_file in env_files:
        env = yaml.safe_load(env_file.read_text())
        pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
        assert len(pip_sections) == 1, env_file
        for name, version in pins(pip_sections[0]).items():
            assert pinned.get(name) == version, f"{env_file.name}: {name}=={version}"


def test_every_rule_names_an_existing_conda_env():
    for rule_file in (REPO / "workflow" / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"([^"]+)"', rule_file.read_text()):
            assert (rule_file.parent / env).resolve().is_file(), f"{rule_file.name}: {env}"
