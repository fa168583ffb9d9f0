"""The conda description (environment.yml) must name the same pins as pyproject.toml."""

from __future__ import annotations

import re
import tomllib

from conftest import PROJECT_ROOT


def _pyproject_dependencies() -> set[str]:
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]
    return {dep.replace(" ", "") for dep in project["dependencies"]}


def _environment_pip_dependencies() -> set[str]:
    # environment.yml is simple enough to read without a YAML library: the pip section's items.
    lines = (PROJECT_ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\s*-\s*pip:\s*$", line))
    deps = set()
    for line in lines[start + 1:]:
        match = re.match(r"\s+-\s+(\S.*)$", line)
        if not match:
            break
        deps.add(match.group(1).replace(" ", ""))
    return deps - {"-e."}


def test_environment_yml_pins_match_pyproject():
    assert _environment_pip_dependencies() == _pyproject_dependencies()


def test_environment_yml_uses_python_311():
    text = (PROJECT_ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*-\s*python=3\.11\s*$", text, re.MULTILINE)


def test_torch_and_torchaudio_pinned_to_the_same_release():
    deps = _pyproject_dependencies()
    assert "torch==2.11.0" in deps and "torchaudio==2.11.0" in deps
