"""Every third-party module the package imports is a declared dependency.

A module that is installed only because a test extra pulls it in (click came through dask) makes
the README's first command fail on a fresh ``pip install .``; this test finds such imports from
the source itself, independent of what happens to be installed.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import distributions, packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OWN = {"pipeline", "example_data", "configs", "benchmarks"}


def _imported_top_modules(folder: Path) -> dict[str, str]:
    """Top-level module -> first file importing it, for every absolute import under ``folder``."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return found


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    if extra:
        requirements += project["optional-dependencies"][extra]
    declared = set()
    for requirement in requirements:
        name, _, rest = re.match(r"([A-Za-z0-9._-]+)(\[([^\]]*)\])?", requirement).groups()
        declared.add(_normalise(name))
        # dask's "distributed" extra is the distributed distribution itself
        declared |= {_normalise(extra) for extra in (rest or "").split(",") if extra.strip() == "distributed"}
    return declared


def _module_owners() -> dict[str, set[str]]:
    """Top-level module -> distributions, including compiled single-file modules (manifold3d's
    ``.so``), which Python 3.11's ``packages_distributions`` does not infer."""
    owners = {module: {_normalise(name) for name in names} for module, names in packages_distributions().items()}
    for distribution in distributions():
        for file in distribution.files or []:
            if len(file.parts) == 1 and file.suffix in {".so", ".pyd"}:
                owners.setdefault(file.name.split(".")[0], set()).add(_normalise(distribution.metadata["Name"]))
    return owners


def _undeclared(folder: Path, declared: set[str], optional: set[str] = frozenset()) -> list[str]:
    module_owners = _module_owners()
    missing = []
    for module, where in _imported_top_modules(folder).items():
        local = (folder / f"{module}.py").is_file() or (folder / module).is_dir()  # a test's helper module
        if module in OWN or local or module in sys.stdlib_module_names or module == "__future__":
            continue
        owners = module_owners.get(module, set())
        assert owners, f"{module} (imported by {where}) is not installed, so its distribution cannot be named"
        if not owners & (declared | optional):
            missing.append(f"{module} (imported by {where}, from {', '.join(sorted(owners))})")
    return missing


def test_every_import_of_the_package_is_a_declared_dependency():
    # The optional extras are imported lazily behind an ImportError with a message saying which extra
    optional = _declared("vtk")
    assert _undeclared(REPO / "pipeline", _declared(), optional) == []
    assert _undeclared(REPO / "example_data", _declared()) == []


def test_every_import_of_the_tests_is_declared_with_the_test_extra():
    assert _undeclared(REPO / "tests", _declared("test")) == []
