"""The anatomodel exception family.

Every error a user can cause (a bad file, a bad value, an impossible request) is raised as a
subclass of :class:`AnatomodelError` with a message a lab technician can act on: what is wrong,
where, and what to do. The command line maps each class to its own exit code and prints the
message on one line, without a traceback (``--debug`` shows it).

Exit codes 0 (success), 1 (internal error: a bug) and 2 (command-line usage, from click) are
reserved (:data:`RESERVED_EXIT_CODES`); the codes below start at 3. Code 19
(:class:`HeldForReview`) is not a failure. :func:`exit_codes` lists every class by its code: the
command line's help and the README's table are checked against it.
"""

from __future__ import annotations

#: The exit codes no error class has, and what they mean.
RESERVED_EXIT_CODES = {0: "success", 1: "internal error (a bug)", 2: "command-line usage error"}


class AnatomodelError(Exception):
    """Base class of every error caused by input, configuration or environment."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message} ({self.hint})" if self.hint else message


class ConfigError(AnatomodelError):
    """A YAML file (case, preset, printer profile, coding rules) is missing or invalid."""

    exit_code = 4


class DicomError(AnatomodelError):
    """DICOM or image input cannot be read: missing, corrupt, truncated or not an image."""

    exit_code = 5


class SeriesSelectionError(DicomError):
    """No usable series, an ambiguous automatic choice, or a requested series not found."""

    exit_code = 6


class GeometryError(AnatomodelError):
    """Inconsistent geometry: mixed orientations or sizes, gaps, duplicate positions, grids."""

    exit_code = 7


class SegmentationError(AnatomodelError):
    """A segmentation cannot be made: seed outside the volume or window, empty result."""

    exit_code = 8


class MeshError(AnatomodelError):
    """A surface cannot be made or repaired into a closed printable solid."""

    exit_code = 9


class PrintPlanError(AnatomodelError):
    """A print cannot be planned: unknown printer, impossible fit request."""

    exit_code = 10


class CodingError(AnatomodelError):
    """Billing rules refuse the request: bad CPT, modifier, ICD-10 code or missing indication."""

    exit_code = 11


class DocumentError(AnatomodelError):
    """The documentation packet cannot be written or is incomplete."""

    exit_code = 12


class LedgerError(AnatomodelError):
    """The case ledger refuses an operation or is inconsistent."""

    exit_code = 13


class RegressionDrift(AnatomodelError):
    """A regression run found models outside their golden tolerances."""

    exit_code = 14


class EnvironmentFault(AnatomodelError):
    """The machine refuses the work: disk full, read-only or missing folder, a file where a folder
    is expected, no permission. Nothing is wrong with the input; fix the place and run again."""

    exit_code = 15


class MemoryLimitExceeded(EnvironmentFault):
    """A batch case ran out of memory: its Dask worker went above its memory limit and was
    restarted. Nothing is wrong with the case; give the workers more memory, or run fewer at once."""

    exit_code = 22


class CoverageError(AnatomodelError):
    """The series is too short along the slice axis for the preset's structure: fewer slices
    than its ``coverage_mm`` needs (refused before any work)."""

    exit_code = 21


class PacsError(AnatomodelError):
    """A DICOM node cannot be reached, refuses us, or answers with too little or too much.

    Unreachable node, rejected association, accession not found or ambiguous, a partial
    retrieve, a store that failed. Messages name the node and counts, never the patient.
    """

    exit_code = 16


class ScanError(AnatomodelError):
    """A print-QA scan is unusable: empty, unreadable, in the wrong units, or holds no printed object."""

    exit_code = 17


class RegistrationError(AnatomodelError):
    """A print-QA scan could not be registered to the model (another object, or no convergence)."""

    exit_code = 18


class HeldForReview(AnatomodelError):
    """Not a failure: the work is done, but a charge is held until a named person releases it.

    Raised by the command line after the work, so that scripts see exit code 19; also when no
    charge is involved but the result needs a person's decision (a failed print check that was
    not recorded, a model that fits the printer in no orientation).
    """

    exit_code = 19


class IdentityError(AnatomodelError):
    """The case file's patient (name, ID, birth date) is not the patient of the series."""

    exit_code = 20


def exit_codes() -> dict[int, type[AnatomodelError]]:
    """Every error class of this module by its exit code, in code order.

    Returns
    -------
    dict of int to type
        Exit code to the one class that has it (:class:`AnatomodelError` itself is 3); the
        class's name is the ``kind`` of a ``--json`` error object.

    Raises
    ------
    RuntimeError
        Two classes share an exit code, or one takes a reserved code (a bug of this module).
    """
    classes = [value for value in globals().values()
               if isinstance(value, type) and issubclass(value, AnatomodelError)]
    codes: dict[int, type[AnatomodelError]] = {}
    for error in classes:
        if error.exit_code in codes or error.exit_code in RESERVED_EXIT_CODES:
            raise RuntimeError(f"exit code {error.exit_code} of {error.__name__} is already taken")
        codes[error.exit_code] = error
    return dict(sorted(codes.items()))
