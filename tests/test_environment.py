"""environment.yml (conda users) stays in sync with pyproject.toml, the single source of truth."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _env():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_environment_installs_the_project_from_pyproject():
    deps = _env()["dependencies"]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert pip_sections == [["-e .[dev]"]], "environment.yml must install the project itself, nothing else, via pip"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "dev" in extras


def test_environment_python_matches_requires_python():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    minimum = re.search(r">=\s*(\d+\.\d+)", project["requires-python"]).group(1)
    conda_python = [d for d in _env()["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    assert conda_python == [f"python={minimum}"]


def test_no_python_package_is_listed_in_both_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    py_names = {re.split(r"[<>=!\[ ]", d)[0].lower() for d in project["dependencies"]}
    conda_names = {re.split(r"[<>=! ]", d)[0].lower() for d in _env()["dependencies"] if isinstance(d, str)}
    assert not (py_names & (conda_names - {"python", "pip"}))


def test_readme_starts_with_the_two_commands():
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.strip()]
    commands = [ln for ln in lines[:8] if ln.startswith("make ")]
    assert [c.split()[1] for c in commands[:2]] == ["demo", "test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
