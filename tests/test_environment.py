"""The conda environment (environment.yml) and the pip install path (pyproject.toml) list the same packages."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge names that differ from PyPI's
NOT_PACKAGES = {"python", "pip"}


def _split(spec: str) -> tuple[str, str]:
    name, version = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec).groups()
    return name.lower().replace("_", "-"), version.replace(" ", "")


def pip_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["dev"] + project["optional-dependencies"]["mini"]
    return dict(_split(s) for s in specs)


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):  # the pip: section
            for spec in dep["pip"]:
                if not spec.startswith("-"):
                    out.update([_split(spec)])
            continue
        name, version = _split(dep.replace("=", "==", 1) if re.match(r"^[^<>=!]+=[^=]", dep) else dep)
        if name not in NOT_PACKAGES:
            out[CONDA_TO_PIP.get(name, name)] = version
    return out


def test_environment_yml_matches_pyproject():
    pip, conda = pip_requirements(), conda_requirements()
    assert sorted(pip) == sorted(conda), f"only in pyproject: {sorted(set(pip) - set(conda))}; only in environment.yml: {sorted(set(conda) - set(pip))}"
    mismatched = {name: (pip[name], conda[name]) for name in pip if pip[name] != conda[name]}
    assert not mismatched, f"version specifiers differ (pyproject, environment.yml): {mismatched}"


def test_makefile_pins_cpu_torch():
    # an unpinned torch pulls a multi-GB CUDA build on a CPU machine
    assert "TORCH_SPEC ?= torch==2.13.0" in (ROOT / "Makefile").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci
