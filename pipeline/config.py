"""Finding and validating YAML configuration (presets, printer profiles, coding rules, cases).

Named configurations live under ``configs/<kind>/<name>.yaml`` in the repository (installed as
the package ``pipeline.configs``). Extra folders can be put in front of that search with the
``ANATOMODEL_CONFIG_PATH`` environment variable (``os.pathsep``-separated folders holding the same
``<kind>/`` layout). A value that names an existing ``.yaml`` file is used as that file.

Every file is validated by a pydantic model; a bad value is reported with the file, the field
and the reason as a :class:`~pipeline.errors.ConfigError`.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Callable, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)

CONFIG_PATH_VARIABLE = "ANATOMODEL_CONFIG_PATH"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def builtin_config_dir() -> Path:
    """The folder of the configurations shipped with anatomodel.

    Installed, it is the package ``pipeline.configs``; run from a source checkout, the
    repository's ``configs/`` folder.

    Returns
    -------
    Path
        The checkout's ``configs/`` folder when it exists, else the installed package folder.
    """
    checkout = Path(__file__).resolve().parent.parent / "configs"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("pipeline.configs")))


def config_dirs() -> list[Path]:
    """Folders searched for named configurations, first match wins.

    Returns
    -------
    list of Path
        The folders of ``ANATOMODEL_CONFIG_PATH`` in their order (empty entries skipped), then
        :func:`builtin_config_dir`. Folders are not checked for existence.
    """
    extra = [Path(p) for p in os.environ.get(CONFIG_PATH_VARIABLE, "").split(os.pathsep) if p]
    return [*extra, builtin_config_dir()]


def available(kind: str) -> list[str]:
    """Names of the configurations of one kind (``presets``, ``printers``, ...).

    Parameters
    ----------
    kind : str
        The configuration kind, i.e. the sub-folder name (plural: ``presets``, ``printers``,
        ``coding``, ...).

    Returns
    -------
    list of str
        Sorted, de-duplicated file stems of the ``<kind>/*.yaml`` files in every folder of
        :func:`config_dirs`; empty when there are none.
    """
    names: set[str] = set()
    for folder in config_dirs():
        names.update(p.stem for p in (folder / kind).glob("*.yaml"))
    return sorted(names)


#: What a message calls one configuration of each kind (sub-folder); other kinds lose their plural "s".
CONFIG_NOUNS = {"qa": "QA policy", "coding": "coding rules"}


def _noun(kind: str) -> str:
    return CONFIG_NOUNS.get(kind, kind.removesuffix("s"))


def find_config(kind: str, name: str) -> Path:
    """Path of the configuration ``name`` of ``kind``, or of ``name`` itself if it is a file.

    Parameters
    ----------
    kind : str
        The configuration kind, the plural sub-folder name (``presets``, ``printers``, ...);
        messages name it as :data:`CONFIG_NOUNS` says (``preset``, ``QA policy``).
    name : str
        A configuration name (letters, digits, ``_ . -``, not starting with a punctuation
        mark), or the path of an existing ``.yaml``/``.yml`` file.

    Returns
    -------
    Path
        ``name`` as a path when it is an existing YAML file, else the first
        ``<folder>/<kind>/<name>.yaml`` found along :func:`config_dirs`.

    Raises
    ------
    ConfigError
        ``name`` is not a valid name, or no folder holds it (the message lists the available
        names and suggests a close one). Exit code 4.
    """
    candidate = Path(name)
    if candidate.suffix in {".yaml", ".yml"} and candidate.is_file():
        return candidate
    if not _NAME.match(name):
        raise ConfigError(f"{_noun(kind)} name {name!r} is not a valid name (letters, digits, _ . -)")
    for folder in config_dirs():
        path = folder / kind / f"{name}.yaml"
        if path.is_file():
            return path
    names = available(kind)
    choices = ", ".join(names) or "none"
    import difflib

    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"unknown {_noun(kind)} {name!r}; {hint}available: {choices}")


#: Largest YAML file read (case files, manifests, presets, printer profiles), bytes.
MAX_YAML_BYTES = 1 << 20
#: Most aliases (``*name``) one YAML file may use; anchors beyond this are a billion-laughs risk.
MAX_YAML_ALIASES = 64
#: Most values (mappings, lists and scalars, counting each alias expansion) one file may hold.
MAX_YAML_NODES = 100_000
#: Longest text value in a YAML file, characters (fields may set tighter limits).
MAX_TEXT_CHARS = 4096
#: Largest magnitude of a number in a YAML file (no lab quantity comes near it).
MAX_NUMBER = 1e9


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing files that use more than :data:`MAX_YAML_ALIASES` aliases."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.aliases_seen = 0

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        """Compose one node as PyYAML does, counting aliases.

        Parameters
        ----------
        parent : yaml.Node or None
            The node being composed into (PyYAML's argument).
        index : object
            The key or position in ``parent`` (PyYAML's argument).

        Returns
        -------
        yaml.Node
            The composed node.

        Raises
        ------
        _TooManyAliases
            More than :data:`MAX_YAML_ALIASES` aliases in the file.
        """
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise _TooManyAliases(f"line {mark.line + 1}: more than {MAX_YAML_ALIASES} aliases (*name)")
        return super().compose_node(parent, index)


    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        """Build a mapping as PyYAML does, refusing a key given twice.

        Parameters
        ----------
        node : yaml.MappingNode
            The mapping node.
        deep : bool
            Construct nested values at once (PyYAML's argument).

        Returns
        -------
        dict
            The constructed mapping.

        Raises
        ------
        yaml.constructor.ConstructorError
            A scalar key occurs twice (reported as a YAML error with its line).
        """
        # A key given twice is a mistake PyYAML would hide (the last value silently wins).
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {shorten_text(key)} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node):  # type: ignore[no-untyped-def]
        """A date or time as PyYAML builds it, or the plain text when it is impossible.

        Parameters
        ----------
        node : yaml.ScalarNode
            The timestamp-looking scalar.

        Returns
        -------
        datetime.date or datetime.datetime or str
            The parsed value, or the scalar's text.
        """
        # An impossible date (1964-13-45) stays text, so validation names its field.
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, OverflowError):
            return self.construct_scalar(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:timestamp", _BoundedLoader.construct_yaml_timestamp)


class _TooManyAliases(Exception):
    pass


def require_file(path: str | Path, what: str = "file") -> Path:
    """``path`` if it is a readable regular file, else a ConfigError saying what it is instead.

    Parameters
    ----------
    path : str or Path
        The file named by the user.
    what : str
        What the file is, for the message (``"case file"``, ``"manifest"``).

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`, unchanged.

    Raises
    ------
    ConfigError
        ``path`` is a folder, does not exist, or is not a regular file (a device, pipe or
        socket). Exit code 4.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder, not a file",
                          hint=f"give the {what} itself (a .yaml file), e.g. {path / 'case.yaml'}")
    if not path.exists():
        raise ConfigError(f"{what} {path} not found", hint="check the path and the current folder")
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a regular file (a device, pipe or socket)")
    return path


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of a configuration or manifest file, refused (ConfigError) when it is a
    folder or missing, larger than :data:`MAX_YAML_BYTES`, binary (a NUL byte) or not UTF-8.

    Parameters
    ----------
    path : str or Path
        The file to read.
    what : str
        What the file is, for the messages (``"case file"``, ``"manifest"``).

    Returns
    -------
    str
        The whole file decoded as UTF-8 (at most :data:`MAX_YAML_BYTES` bytes).

    Raises
    ------
    ConfigError
        As :func:`require_file`; also when the file cannot be read (permissions), is over
        :data:`MAX_YAML_BYTES`, holds a NUL byte or is not valid UTF-8. Exit code 4.
    """
    path = require_file(path, what)
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_YAML_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})",
                          hint="check the file's permissions") from error
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES // 1024} KiB, not a {what}",
                          hint=f"give the {what} itself")
    nul = raw.find(b"\0")
    if nul >= 0:
        raise ConfigError(f"{path}: binary content (a NUL byte at offset {nul}), not a text {what}",
                          hint=f"give the {what} itself, saved as UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start})",
                          hint="save the file as UTF-8") from None
    return text


def read_yaml(path: str | Path, what: str = "file") -> object:
    """Parse a YAML file within bounds, reporting every fault with the file and where.

    Refused, each with a one-line :class:`~pipeline.errors.ConfigError`: a folder or missing
    path, a file over :data:`MAX_YAML_BYTES`, binary content (NUL bytes, not UTF-8), syntax
    errors (with the line), more than :data:`MAX_YAML_ALIASES` aliases or
    :data:`MAX_YAML_NODES` values (alias bombs), control characters in any text (NUL, ANSI
    escapes; tab and newline are allowed), text over :data:`MAX_TEXT_CHARS` characters, and
    numbers that are not finite or exceed :data:`MAX_NUMBER` in magnitude.

    Parameters
    ----------
    path : str or Path
        The YAML file to parse.
    what : str
        What the file is, for the messages (``"case file"``, ``"manifest"``).

    Returns
    -------
    object
        The parsed document (usually a ``dict``; any YAML value, ``None`` for an empty file),
        already passed through :func:`check_values`.

    Raises
    ------
    ConfigError
        For each refusal listed above, including nesting too deep to parse or walk. Exit
        code 4.
    """
    text = read_text(path, what)
    loader = _BoundedLoader(text)
    try:
        data = loader.get_single_data()
    except _TooManyAliases as error:
        raise ConfigError(f"{path}: {error}, refused as a possible alias bomb",
                          hint="write the values out instead of repeating anchors") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}:{where} is not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a configuration file") from None
    finally:
        loader.dispose()
    try:
        check_values(data, str(path))
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a configuration file") from None
    return data


def check_values(data: object, source: str) -> None:
    """Refuse oversized, control-character-laden or out-of-range values anywhere in ``data``.

    Walks mappings and lists (counting every alias expansion, so a shared node counts each
    time it is reached) and raises :class:`~pipeline.errors.ConfigError` naming the field.

    Parameters
    ----------
    data : object
        Parsed YAML: mappings, lists, text, numbers and other scalars, nested.
    source : str
        Where the data came from (a file path), to start each message.

    Raises
    ------
    ConfigError
        More than :data:`MAX_YAML_NODES` values are reached, a text (value or key) fails
        :func:`text_problem` with :data:`MAX_TEXT_CHARS`, or a number fails
        :func:`number_problem` with :data:`MAX_NUMBER`. Exit code 4.
    """
    budget = [MAX_YAML_NODES]

    def walk(value: object, where: tuple[str, ...]) -> None:
        """Check one value and, recursively, what it holds.

        Parameters
        ----------
        value : object
            The value to check.
        where : tuple of str
            Field names and list indices leading to it, for the message.

        Raises
        ------
        ConfigError
            The value budget is spent, or a text or number is refused.
        """
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError(f"{source}: more than {MAX_YAML_NODES} values (aliases expand to too much data), "
                              "refused as a possible alias bomb",
                              hint="write the values out instead of repeating anchors")
        field_name = ".".join(where) or "(top level)"
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str):
                    walk(key, where + ("(key)",))
                walk(item, where + (str(key)[:40],))
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(item, where + (str(index),))
        elif isinstance(value, str):
            problem = text_problem(value, MAX_TEXT_CHARS)
            if problem:
                raise ConfigError(f"{source}: field '{field_name}': {problem}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            problem = number_problem(value, MAX_NUMBER)
            if problem:
                raise ConfigError(f"{source}: field '{field_name}': {problem}")

    walk(data, ())


def text_problem(text: str, max_chars: int) -> str | None:
    """Why ``text`` is not acceptable as a text field, or None.

    Control characters (Unicode category Cc: NUL, ESC and the ANSI escape sequences it starts,
    C1 controls) are refused except tab, line feed and carriage return.

    Parameters
    ----------
    text : str
        The text to check.
    max_chars : int
        Longest accepted text, characters (code points).

    Returns
    -------
    str or None
        A sentence saying what is wrong (the length, or the first control character and its
        1-based position), or None when the text is acceptable.
    """
    if len(text) > max_chars:
        return f"text of {len(text)} characters, longer than the limit of {max_chars}"
    for position, char in enumerate(text):
        if unicodedata.category(char) == "Cc" and char not in "\t\n\r":
            return (f"contains the control character U+{ord(char):04X} at position {position + 1}; "
                    "remove it (control characters and terminal escape codes are not allowed in text)")
    return None


def number_problem(value: float, limit: float) -> str | None:
    """Why ``value`` is not an acceptable number (not finite, or beyond ``limit``), or None.

    Parameters
    ----------
    value : float
        The number to check (an int is accepted too).
    limit : float
        Largest accepted magnitude, in the value's own unit.

    Returns
    -------
    str or None
        A sentence saying what is wrong, or None when ``value`` is finite and
        ``abs(value) <= limit``.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    if abs(value) > limit:
        return f"{shorten_number(value)} is out of range (at most {limit:g} in magnitude)"
    return None


def shorten_number(value: float) -> str:
    """A number for a message: never hundreds of digits (``1e+308``, ``1.2e+40``).

    Parameters
    ----------
    value : float
        The number (an int is accepted too, however large).

    Returns
    -------
    str
        An int below 10**12 in full; otherwise three significant digits (``%.3g``), or
        ``"an integer of N digits"`` for an int too large to convert to float.
    """
    if isinstance(value, int) and abs(value) < 10**12:
        return str(value)
    try:
        return f"{float(value):.3g}"
    except OverflowError:
        return f"an integer of {len(str(abs(value)))} digits"


def shorten_text(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (numbers shortened), for messages.

    Parameters
    ----------
    value : object
        Any value; numbers (not booleans) go through :func:`shorten_number`.
    limit : int
        Most characters of the ``repr`` shown.

    Returns
    -------
    str
        The ``repr`` when it fits, else its first ``limit`` characters, ``...`` and the full
        size (``(N characters)``).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return shorten_number(value)
    shown = repr(value)
    if len(shown) <= limit:
        return shown
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(shown)} characters shown"
    return f"{shown[:limit]}... ({size})"


# -- constrained field types for schemas (case files, presets) ------------------------------------

def _checked_text(max_chars: int, single_line: bool, backslash: bool) -> Callable[[str], str]:
    def check(text: str) -> str:
        """The text itself, if the field accepts it.

        Parameters
        ----------
        text : str
            The field's value.

        Returns
        -------
        str
            ``text``, unchanged.

        Raises
        ------
        ValueError
            Refused by :func:`text_problem`, a line break or tab in a one-line field, or a
            backslash where none is allowed.
        """
        problem = text_problem(text, max_chars)
        if problem:
            raise ValueError(problem)
        if single_line and ("\n" in text or "\r" in text or "\t" in text):
            raise ValueError("must be one line (no line breaks or tabs)")
        if not backslash and "\\" in text:
            raise ValueError("must not contain a backslash (DICOM separates values with it)")
        return text
    return check


def bounded_text(max_chars: int, *, single_line: bool = False, backslash: bool = True) -> Any:
    """A ``str`` field type: at most ``max_chars`` characters, no control characters.

    Parameters
    ----------
    max_chars : int
        Longest value, characters.
    single_line : bool
        Also refuse line breaks and tabs.
    backslash : bool
        Allow ``\\`` (False for values written into DICOM, where it separates values).

    Returns
    -------
    Any
        An ``Annotated[str, AfterValidator(...)]`` type for pydantic fields; validation raises
        ``ValueError`` (reported by pydantic) for a refused value.
    """
    return Annotated[str, AfterValidator(_checked_text(max_chars, single_line, backslash))]


def _person_name(text: str) -> str:
    _checked_text(64 * 3 + 2, True, False)(text)
    for group in text.split("="):  # alphabetic, ideographic, phonetic groups
        if len(group) > 64:
            raise ValueError(f"a DICOM person name group holds at most 64 characters, got {len(group)}")
        if group.count("^") > 4:
            raise ValueError("a DICOM person name has at most 5 components (FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX)")
    return text


#: DICOM Long String (LO, e.g. PatientID, InstitutionName): one line of at most 64 characters.
LongString = bounded_text(64, single_line=True, backslash=False)
#: DICOM Person Name (PN): FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX, at most 64 characters a group.
PersonName = Annotated[str, AfterValidator(_person_name)]
#: DICOM Short Text (ST, e.g. a summary or a note): at most 1024 characters, line breaks allowed.
ShortText = bounded_text(1024)
#: A coordinate in patient LPS millimetres: finite and within 10 m of the scanner's origin.
CoordinateMM = Annotated[float, Field(allow_inf_nan=False, ge=-10_000.0, le=10_000.0)]


class ClosedModel(BaseModel):
    """The base of every schema that refuses unknown fields (the bundled coding, payer and ICD-10 rules).

    A misspelt field (``lowr_hu``) is an error naming the closest known field (see
    :func:`format_validation_error`) instead of a setting silently ignored. Text is kept as written.
    """

    model_config = ConfigDict(extra="forbid")


class StrictModel(ClosedModel):
    """The base of every configuration schema: a :class:`ClosedModel` whose text is stripped.

    Leading and trailing white space of every text value is removed before validation.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class FrozenModel(StrictModel, frozen=True):
    """A :class:`StrictModel` that cannot be changed once validated (printer profiles, QA
    policies, PACS nodes: shared, read-only settings)."""


def format_validation_error(source: str, error: ValidationError, model: type[Model] | None = None) -> str:
    """One readable line per problem: ``file: field 'a.b': reason (got value)``; an unknown
    field of ``model`` (or of a model nested in it) names the closest known one.

    Parameters
    ----------
    source : str
        Where the data came from (a file path), to start each line.
    error : pydantic.ValidationError
        The validation failure to describe.
    model : type of BaseModel or None
        The model validated against, to suggest field names for unknown fields; None gives
        no suggestions.

    Returns
    -------
    str
        The problems joined by ``"; "``, each ``source: field 'a.b': reason (got value)``.
    """
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        got = problem.get("input")
        shown = "" if problem["type"] == "missing" or isinstance(got, dict) else f" (got {shorten_text(got)})"
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
    """Validate parsed data against a pydantic model, raising ConfigError naming the field.

    Parameters
    ----------
    model : type of BaseModel
        The pydantic model to validate against.
    data : object
        Parsed YAML (must be a mapping).
    source : str
        Where the data came from (a file path), for the message.

    Returns
    -------
    BaseModel
        An instance of ``model``.

    Raises
    ------
    ConfigError
        ``data`` is not a mapping, or fails the model (message from
        :func:`format_validation_error`). Exit code 4.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(source, error, model)) from None


def load_config(kind: str, name: str, model: type[Model]) -> Model:
    """Find, parse and validate a named configuration.

    Parameters
    ----------
    kind : str
        The configuration kind, the plural sub-folder name (``presets``, ``printers``, ...).
    name : str
        A configuration name or the path of a ``.yaml`` file (see :func:`find_config`).
    model : type of BaseModel
        The pydantic model the file must satisfy.

    Returns
    -------
    BaseModel
        An instance of ``model``.

    Raises
    ------
    ConfigError
        From :func:`find_config`, :func:`read_yaml` or :func:`validate`. Exit code 4.
    """
    path = find_config(kind, name)
    return validate(model, read_yaml(path), str(path))
