"""Finding and validating YAML configuration (presets, printer profiles, coding rules, cases).

Named configurations live under ``configs/<kind>/<name>.yaml`` in the repository (installed as
the package ``pipeline.configs``). Extra folders can be put in front of that search with the
``ANATOMODEL_CONFIG_PATH`` environment variable (``os.pathsep``-separated folders holding the same
``<kind>/`` layout). A value that names an existing ``.yaml`` file is used as that file.

Every file is validated by a pydantic model; a bad value is reported with the file, the field
and the reason as a :class:`~pipeline.errors.ConfigError`.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)

CONFIG_PATH_VARIABLE = "ANATOMODEL_CONFIG_PATH"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def builtin_config_dir() -> Path:
    """The folder of the configurations shipped with anatomodel.

    Installed, it is the package ``pipeline.configs``; run from a source checkout, the
    repository's ``configs/`` folder.
    """
    checkout = Path(__file__).resolve().parent.parent / "configs"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("pipeline.configs")))


def config_dirs() -> list[Path]:
    """Folders searched for named configurations, first match wins."""
    extra = [Path(p) for p in os.environ.get(CONFIG_PATH_VARIABLE, "").split(os.pathsep) if p]
    return [*extra, builtin_config_dir()]


def available(kind: str) -> list[str]:
    """Names of the configurations of one kind (``presets``, ``printers``, ...)."""
    names: set[str] = set()
    for folder in config_dirs():
        names.update(p.stem for p in (folder / kind).glob("*.yaml"))
    return sorted(names)


def find_config(kind: str, name: str) -> Path:
    """Path of the configuration ``name`` of ``kind``, or of ``name`` itself if it is a file."""
    candidate = Path(name)
    if candidate.suffix in {".yaml", ".yml"} and candidate.is_file():
        return candidate
    if not _NAME.match(name):
        raise ConfigError(f"{kind[:-1]} name {name!r} is not a valid name (letters, digits, _ . -)")
    for folder in config_dirs():
        path = folder / kind / f"{name}.yaml"
        if path.is_file():
            return path
    names = available(kind)
    choices = ", ".join(names) or "none"
    import difflib

    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"unknown {kind[:-1]} {name!r}; {hint}available: {choices}")


def read_yaml(path: Path) -> object:
    """Parse a YAML file, reporting syntax errors with the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(error, 'problem', error)})") from error


def format_validation_error(source: str, error: ValidationError, model: type[Model] | None = None) -> str:
    """One readable line per problem: ``file: field 'a.b': reason (got value)``; an unknown
    field of ``model`` (or of a model nested in it) names the closest known one."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        got = problem.get("input")
        shown = "" if problem["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
        hint = ""
        if problem["type"] == "extra_forbidden" and model is not None and problem["loc"]:
            import difflib

            known = _field_names(model, problem["loc"][:-1])
            close = difflib.get_close_matches(str(problem["loc"][-1]), known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else (f"; known fields: {', '.join(known)}" if known else "")
        lines.append(f"{source}: field '{field}': {problem['msg']}{shown}{hint}")
    return "; ".join(lines)


def _field_names(model: type[Model], path: tuple) -> list[str]:
    """Field names of the model found at ``path`` (field names and list indices) inside ``model``."""
    import typing

    current: object = model
    for part in path:
        if isinstance(part, int):  # a list item: the element type was taken with the list
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
        while typing.get_origin(current) is not None:  # list[X], X | None, dict[str, X]: the model inside
            inner = [a for a in typing.get_args(current) if isinstance(a, type) and issubclass(a, BaseModel)]
            if not inner:
                return []
            current = inner[0]
    fields = getattr(current, "model_fields", None) or {}
    return [info.alias or name for name, info in fields.items()]


def validate(model: type[Model], data: object, source: str) -> Model:
    """Validate parsed data against a pydantic model, raising ConfigError naming the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(source, error, model)) from None


def load_config(kind: str, name: str, model: type[Model]) -> Model:
    """Find, parse and validate a named configuration."""
    path = find_config(kind, name)
    return validate(model, read_yaml(path), str(path))
