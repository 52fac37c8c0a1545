"""ICD-10-CM diagnosis codes, checked against the CMS/NCHS tabular list.

The code set comes from the ``simple-icd-10-cm`` package (pinned in ``pyproject.toml``), which
ships the **April 2026 update of the FY2026 ICD-10-CM release** (tabular list
``icd10c-tabular-April-1-2026.xml``; FY2026 took effect 2025-10-01, its April update 2026-04-01).
The package holds one release only, so the few header expansions that matter to our
indications, with their dates and sources, live in ``configs/coding/icd10cm_history.yaml``.
Another release (the next fiscal year's) is loaded from the CDC's files in the folder
``$ANATOMODEL_ICD10CM_RELEASE``; a date of service outside the release's fiscal year is flagged.

A code that is not in the code set (a typing error, an ICD-9-CM code such as ``441.01``, a CPT
or HCPCS code put in the diagnosis list) is refused with :class:`~pipeline.errors.CodingError`.
A code that exists but is a header (not billable on the date of service) is not an input error:
it becomes a :class:`~pipeline.holds.Hold` naming the billable codes to choose from.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field

from pipeline.config import ClosedModel, load_config
from pipeline.errors import CodingError, ConfigError
from pipeline.holds import Hold
from pipeline.report import Report

#: The release the package holds (see the module docstring).
BUNDLED_RELEASE = "ICD-10-CM FY2026, April 1, 2026 update (simple-icd-10-cm 1.5.0)"

#: Hold codes.
HOLD_NOT_BILLABLE = "coding.icd10_not_billable"
HOLD_NOT_IN_EFFECT = "coding.icd10_not_in_effect"

#: ICD-10-CM form: a letter, a digit, a digit or letter; then optionally '.' and 1-4 characters.
_ICD10_FORM = re.compile(r"^([A-Z][0-9][0-9A-Z])(?:\.?([0-9A-Z]{1,4}))?$")
#: Other code sets' forms, to say what a refused code looks like.
_ICD9_FORM = re.compile(r"^(?:[0-9]{3}(?:\.[0-9]{1,2})?|V[0-9]{2}\.[0-9]{1,2}|E[0-9]{3}(?:\.[0-9])?)$")
_CPT_FORM = re.compile(r"^[0-9]{4}[0-9FTU]$")
_HCPCS_FORM = re.compile(r"^[A-V][0-9]{4}$")


# -- the expansion history -------------------------------------------------------------------------

class Expansion(ClosedModel):
    """A header that was split into more specific codes on ``effective``."""

    header: str
    effective: dt.date
    children: list[str] = Field(min_length=2)
    source: str = Field(min_length=10)


class Icd10History(ClosedModel):
    """``configs/coding/icd10cm_history.yaml``."""

    expansions: list[Expansion]


@lru_cache(maxsize=1)
def load_history() -> Icd10History:
    """The expansion table (validated; a bad file is a ConfigError naming the field).

    Returns
    -------
    Icd10History
        ``configs/coding/icd10cm_history.yaml``, read once and cached.

    Raises
    ------
    ConfigError
        The file is missing or invalid. Exit code 4.
    """
    return load_config("coding", "icd10cm_history", Icd10History)


# -- the code set ------------------------------------------------------------------------------------

#: A folder with another release's CDC files (``icd10cm-codes-*.txt``, ``icd10cm-tabular-*.xml``).
RELEASE_ENV = "ANATOMODEL_ICD10CM_RELEASE"


@dataclass(frozen=True)
class Release:
    """The ICD-10-CM release in use: its name and the fiscal year it codes (1 Oct to 30 Sep)."""

    name: str
    fiscal_year: int

    @property
    def in_effect(self) -> tuple[dt.date, dt.date]:
        """The dates of service the release codes.

        Returns
        -------
        tuple of (datetime.date, datetime.date)
            1 October of the year before ``fiscal_year`` and 30 September of ``fiscal_year``,
            both included.
        """
        return dt.date(self.fiscal_year - 1, 10, 1), dt.date(self.fiscal_year, 9, 30)


@lru_cache(maxsize=1)
def _codeset() -> Any:
    """The code set module, loaded on first use (it parses a 10 MB tabular list, ~3 s).

    With ``$ANATOMODEL_ICD10CM_RELEASE`` set, the release in that folder replaces the bundled one.
    """
    import warnings

    with warnings.catch_warnings():  # the package reads its data through importlib's legacy API
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm

        folder = os.environ.get(RELEASE_ENV)
        if folder:
            codes, tabular = _release_files(Path(folder))
            simple_icd_10_cm.change_version(all_codes_file_path=str(codes), classification_data_file_path=str(tabular))
            _other_release_loaded.append(folder)
        elif _other_release_loaded:  # back to the bundled release
            simple_icd_10_cm.change_version()
            _other_release_loaded.clear()
    return simple_icd_10_cm


_other_release_loaded: list[str] = []


def _release_files(folder: Path) -> tuple[Path, Path]:
    codes = sorted(folder.glob("icd10cm*codes*.txt")) + sorted(folder.glob("code-list*.txt"))
    tabular = sorted(folder.glob("*tabular*.xml"))
    if not folder.is_dir() or len(codes) != 1 or len(tabular) != 1:
        raise ConfigError(
            f"${RELEASE_ENV}={folder}: expected a folder with one CDC code list (icd10cm-codes-*.txt) and one "
            f"tabular list (icd10cm-tabular-*.xml), found {[p.name for p in codes + tabular]}")
    return codes[0], tabular[0]


@lru_cache(maxsize=1)
def release() -> Release:
    """The release in use (the bundled FY2026 April update unless ``$ANATOMODEL_ICD10CM_RELEASE`` is set).

    Cached: call :func:`reload_codeset` after changing the variable.

    Returns
    -------
    Release
        The bundled release (fiscal year 2026), or the one whose tabular list is in the
        variable's folder, named after that file and its ``<version>`` year.

    Raises
    ------
    ConfigError
        The folder does not hold exactly one CDC code list and one tabular list, or the tabular
        list has no ``<version>YEAR</version>`` in its first 4096 characters. Exit code 4.
    """
    folder = os.environ.get(RELEASE_ENV)
    if not folder:
        return Release(BUNDLED_RELEASE, 2026)
    _, tabular = _release_files(Path(folder))
    with open(tabular, encoding="utf-8") as handle:
        head = handle.read(4096)
    year = re.search(r"<version>\s*(\d{4})\s*</version>", head)
    if not year:
        raise ConfigError(f"{tabular}: no <version>YEAR</version> near the top; is it a CDC ICD-10-CM tabular list?")
    return Release(f"ICD-10-CM FY{year.group(1)} ({tabular.name})", int(year.group(1)))


def release_note(date_of_service: dt.date) -> str | None:
    """A note when the date of service falls outside the fiscal year of the release in use.

    Parameters
    ----------
    date_of_service : datetime.date
        The encounter's date of service.

    Returns
    -------
    str or None
        A sentence naming the release, its dates and what to do; None when the date is inside
        :attr:`Release.in_effect`.

    Raises
    ------
    ConfigError
        From :func:`release`, for an unusable ``$ANATOMODEL_ICD10CM_RELEASE``.
    """
    start, end = release().in_effect
    if start <= date_of_service <= end:
        return None
    return (f"ICD-10-CM codes were checked against {release().name}, in effect {start} to {end}; the date of "
            f"service {date_of_service} is outside it: check the codes against the release of that date "
            f"(point ${RELEASE_ENV} at its CDC files)")


def reload_codeset() -> None:
    """Forget the loaded release (after changing ``$ANATOMODEL_ICD10CM_RELEASE``)."""
    _codeset.cache_clear()
    release.cache_clear()
    _known.clear()


def _wrong_code_set(text: str) -> str | None:
    """What ``text`` looks like when it is not an ICD-10-CM code, or None."""
    if _CPT_FORM.match(text):
        return "a CPT code (procedures go on the charge line, not in the diagnosis list)"
    if _ICD9_FORM.match(text):
        return "an ICD-9-CM code (retired for dates of service from 2015-10-01; give its ICD-10-CM code)"
    if _HCPCS_FORM.match(text):
        return "a HCPCS Level II code (procedures and supplies, not diagnoses)"
    return None


def normalize_icd10(code: object) -> str:
    """The dotted upper-case form of an ICD-10-CM-shaped code (``i7123`` -> ``I71.23``).

    Only the form is checked here; :func:`lookup_icd10` checks membership.

    Parameters
    ----------
    code : object
        The code as given (must be text); white space around it and case are ignored, the dot
        is optional.

    Returns
    -------
    str
        The category (three characters), then ``.`` and the detail when there is one.

    Raises
    ------
    CodingError
        Not text, a code of another code set (ICD-9-CM, CPT, HCPCS), or not of the form.
        Exit code 11.
    """
    if not isinstance(code, str):
        raise CodingError(f"ICD-10-CM code {code!r} must be text such as 'I71.23'")
    text = code.strip().upper()
    other = _wrong_code_set(text)
    if other and not _ICD10_FORM.match(text):
        raise CodingError(f"diagnosis code {code!r} is {other}; the indication takes ICD-10-CM codes such as I71.23")
    match = _ICD10_FORM.match(text)
    if not match:
        raise CodingError(
            f"ICD-10-CM code {code!r} is malformed: expected a letter, a digit, a digit or letter, "
            "then optionally '.' and 1-4 characters (e.g. I71.23, Q25.1, S72.001A)"
        )
    category, detail = match.groups()
    return f"{category}.{detail}" if detail else category


@dataclass(frozen=True)
class Icd10Code(Report):
    """One ICD-10-CM code as the code set knows it.

    Parameters
    ----------
    code : str
        Dotted form (``I71.23``).
    description : str
        The tabular list's title of the code.
    billable : bool
        True for a leaf of the tabular list (a code that can go on a claim) on the date asked.
    billable_children : list of str
        For a header: the billable codes under it, to choose from.
    history : str
        The expansion that applies to this code, with its source, if any.
    """

    code: str
    description: str
    billable: bool
    billable_children: list[str] = field(default_factory=list)
    history: str = ""
    existed: bool = True


def _leaves_under(code: str) -> list[str]:
    cm = _codeset()
    return [c for c in cm.get_descendants(code) if cm.is_leaf(c)]


# -- what the code set says of one code, kept once looked up -----------------------------------------

#: The folder where the facts of codes already looked up are kept (default: the user's cache folder).
CACHE_ENV = "ANATOMODEL_CACHE_DIR"


@dataclass(frozen=True)
class _CodeFacts:
    """What a lookup needs of a valid category or subcategory: its title, whether it is a leaf,
    the billable codes under it (a header) and its ancestors."""

    description: str
    leaf: bool
    leaves: tuple[str, ...]
    ancestors: tuple[str, ...]


_known: dict[str, _CodeFacts] = {}


def _cache_file() -> Path | None:
    """The JSON file of looked-up codes for the release in use, or None when there is no home.

    Named after the release's identity: the package version for the bundled one, the files'
    paths, sizes and times for one in ``$ANATOMODEL_ICD10CM_RELEASE``.
    """
    import hashlib
    from importlib.metadata import version

    folder = os.environ.get(RELEASE_ENV)
    if folder:
        stamps = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in _release_files(Path(folder))]
        key = "release-" + hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:16]
    else:
        key = f"bundled-{version('simple-icd-10-cm')}"
    root = os.environ.get(CACHE_ENV) or os.environ.get("XDG_CACHE_HOME")
    try:
        base = Path(root) if root else Path.home() / ".cache"
    except RuntimeError:  # no home directory
        return None
    return base / "anatomodel" / "icd10cm" / f"{key}.json"


def _read_cache(path: Path | None) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path is not None else {}
    except (OSError, ValueError):
        return {}  # missing or damaged: looked up again and rewritten
    return data if isinstance(data, dict) else {}


def _code_facts(text: str) -> _CodeFacts | None:
    """The facts of a dotted code, or None when it is not a category or subcategory of the set.

    Parsing the code set takes 2.5 s and holds 200 MiB, so the facts of a code once looked up are
    kept in a small JSON file per release (:func:`_cache_file`) and read from there by later runs;
    the code set is parsed only for a code never seen (or one that is not in it).
    """
    if text in _known:
        return _known[text]
    path = _cache_file()
    entry = _read_cache(path).get(text)
    try:
        facts = _CodeFacts(str(entry["description"]), bool(entry["leaf"]), tuple(map(str, entry["leaves"])),
                           tuple(map(str, entry["ancestors"])))
    except (TypeError, KeyError):
        facts = None
    if facts is None:
        cm = _codeset()
        if not cm.is_valid_item(text) or not cm.is_category_or_subcategory(text):
            return None
        leaf = bool(cm.is_leaf(text))
        facts = _CodeFacts(cm.get_description(text), leaf, () if leaf else tuple(_leaves_under(text)),
                           tuple(cm.get_ancestors(text)))
        _write_cache(path, text, facts)
    _known[text] = facts
    return facts


def _write_cache(path: Path | None, text: str, facts: _CodeFacts) -> None:
    import dataclasses
    import json

    from pipeline.files import atomic_write

    if path is None:
        return
    data = _read_cache(path)
    data[text] = dataclasses.asdict(facts)
    try:
        atomic_write(path, json.dumps(data, sort_keys=True))
    except OSError:
        pass  # a read-only cache folder only costs the next run the parse


def lookup_icd10(code: str, date_of_service: dt.date | None = None) -> Icd10Code:
    """Check ``code`` against the code set (and, with a date, the expansion history).

    Parameters
    ----------
    code : str
        An ICD-10-CM code, with or without the dot, any case.
    date_of_service : datetime.date, optional
        Judge billability on this date: before a header's expansion the header was billable and
        its children did not exist yet.

    Returns
    -------
    Icd10Code

    Raises
    ------
    CodingError
        Malformed, of another code set, or not in the ICD-10-CM code set (the message names the
        nearest existing parent and its billable codes when there is one).
    """
    text = normalize_icd10(code)
    facts = _code_facts(text)
    if facts is None:
        cm = _codeset()
        parent = text
        while len(parent.replace(".", "")) > 3 and not cm.is_valid_item(parent):
            parent = parent[:-1].rstrip(".")
        other = _wrong_code_set(str(code).strip().upper())
        if other:
            hint = f"; it looks like {other}"
        elif cm.is_valid_item(parent) and cm.is_category_or_subcategory(parent):
            hint = (f"; {parent} ({cm.get_description(parent)}) exists, its billable codes are "
                    f"{_summarise(_leaves_under(parent) or [parent])}")
        else:
            hint = ""
        raise CodingError(f"diagnosis code {code!r} is not in the ICD-10-CM code set ({release().name}){hint}")
    billable = facts.leaf
    children = [] if billable else list(facts.leaves)
    history = ""
    existed = True
    if date_of_service is not None:
        for row in load_history().expansions:
            if row.header == text and date_of_service < row.effective:
                billable, children = True, []
                history = f"billable until {row.header} was expanded on {row.effective} ({row.source})"
            elif (text in row.children or row.header in facts.ancestors) and date_of_service < row.effective:
                existed, billable = False, False
                history = (f"{text} did not exist before {row.effective}, when {row.header} was expanded "
                           f"({row.source}); on {date_of_service} the code was {row.header}")
    if not history:
        row = next((r for r in load_history().expansions if r.header == text), None)
        if row is not None:
            history = f"expanded on {row.effective}: {row.source}"
    return Icd10Code(code=text, description=facts.description, billable=billable,
                     billable_children=children, history=history, existed=existed)


def _summarise(codes: list[str], limit: int = 12) -> str:
    shown = ", ".join(codes[:limit])
    return shown + (f" and {len(codes) - limit} more" if len(codes) > limit else "")


def icd10_description(code: str) -> str:
    """The tabular list's title of an ICD-10-CM code (``Q25.1`` -> ``Coarctation of aorta``).

    Parameters
    ----------
    code : str
        An ICD-10-CM code, with or without the dot, any case.

    Returns
    -------
    str
        The title in the release in use.

    Raises
    ------
    CodingError
        If the code is malformed or not in the code set. Exit code 11.
    """
    return lookup_icd10(code).description


def validate_icd10(code: object) -> str:
    """Check an ICD-10-CM code against the code set; return it in dotted upper-case form.

    ``I712`` and ``i71.2`` both give ``I71.2``. A header (not billable) passes: it is held by
    :func:`icd10_holds`, not refused.

    Parameters
    ----------
    code : object
        The code as given (text, with or without the dot, any case).

    Returns
    -------
    str
        The code in dotted upper-case form.

    Raises
    ------
    CodingError
        Not text, malformed, of another code set, or not in the code set. Exit code 11.
    """
    return lookup_icd10(code).code  # type: ignore[arg-type]  # normalize_icd10 refuses non-text


def icd10_holds(codes: list[str], date_of_service: dt.date | None = None,
                model_id: str | None = None) -> list[Hold]:
    """The holds the diagnosis codes of one line raise on its date of service.

    A header gets ``coding.icd10_not_billable`` with its billable codes; a code used before it
    existed gets ``coding.icd10_not_in_effect``.

    Parameters
    ----------
    codes : list of str
        The line's ICD-10-CM codes.
    date_of_service : datetime.date, optional
        The date to judge billability on (see :func:`lookup_icd10`); None uses the release as
        it is.
    model_id : str, optional
        The model the holds are for.

    Returns
    -------
    list of Hold
        One hold per header or not-yet-existing code, in the order of ``codes``; empty when
        every code is billable.

    Raises
    ------
    CodingError
        A code is malformed or not in the code set (from :func:`lookup_icd10`). Exit code 11.
    """
    holds: list[Hold] = []
    for code in codes:
        found = lookup_icd10(code, date_of_service)
        if not found.existed:
            holds.append(Hold(HOLD_NOT_IN_EFFECT, f"ICD-10-CM {found.code}: {found.history}.", "coding", model_id))
        elif not found.billable:
            history = f" ({found.history})" if found.history else ""  # the expansion's date and source
            holds.append(Hold(
                HOLD_NOT_BILLABLE,
                f"ICD-10-CM {found.code} ({found.description}) is a header, not billable{history}; "
                f"code the most specific of {_summarise(found.billable_children)}.",
                "coding", model_id,
            ))
    return holds


def check_indication(codes: list[str], source: str, field: str = "indication.icd10") -> list[str]:
    """Check a case file's diagnosis list before any stage runs; return the dotted codes.

    Parameters
    ----------
    codes : list of str
        The case file's diagnosis codes.
    source : str
        The case file's path, for the message.
    field : str
        The field's dotted name, for the message; the code's index is appended.

    Returns
    -------
    list of str
        The codes in dotted upper-case form, in order (duplicates kept).

    Raises
    ------
    ConfigError
        Naming the file (``source``), the field (``indication.icd10.<n>``) and the reason. Exit
        code 4 (a bad case file, not a coding refusal).
    """
    result = []
    for index, code in enumerate(codes):
        try:
            result.append(validate_icd10(code))
        except CodingError as error:
            raise ConfigError(f"{source}: field '{field}.{index}': {error}") from None
    return result


__all__ = [
    "BUNDLED_RELEASE",
    "Icd10Code",
    "Release",
    "check_indication",
    "icd10_description",
    "icd10_holds",
    "lookup_icd10",
    "normalize_icd10",
    "release",
    "release_note",
    "reload_codeset",
    "validate_icd10",
]
