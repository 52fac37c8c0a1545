"""SHA-256 of files and the ``SHA256SUMS`` manifest (``sha256sum -c`` reads it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST = "SHA256SUMS"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks.

    Parameters
    ----------
    path : Path
        The file.
    chunk : int
        Read size, bytes.

    Returns
    -------
    str
        64 lower-case hex digits.

    Raises
    ------
    OSError
        The file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sha256sums(folder: Path) -> Path:
    """Write ``SHA256SUMS`` over every other file under ``folder`` (sorted, relative paths).

    Parameters
    ----------
    folder : Path
        The folder; every file under it, recursively, except an existing ``SHA256SUMS``.

    Returns
    -------
    Path
        The manifest written (``folder/SHA256SUMS``), one ``<hex>  <posix path>`` line per
        file, as ``sha256sum`` writes it.

    Raises
    ------
    OSError
        A file cannot be read or the manifest cannot be written.
    """
    folder = Path(folder)
    lines = [f"{sha256_file(path)}  {path.relative_to(folder).as_posix()}\n"
             for path in sorted(folder.rglob("*")) if path.is_file() and path.name != MANIFEST]
    target = folder / MANIFEST
    target.write_text("".join(lines), encoding="utf-8")
    return target


def verify_sha256sums(folder: Path) -> list[str]:
    """Names of files that are missing or changed since ``SHA256SUMS`` was written.

    Parameters
    ----------
    folder : Path
        The folder holding ``SHA256SUMS``.

    Returns
    -------
    list of str
        Relative paths, as the manifest names them, in its order; empty when all match. Files
        not in the manifest are not reported.

    Raises
    ------
    OSError
        The manifest cannot be read (e.g. ``FileNotFoundError`` when there is none).
    ValueError
        A manifest line is not ``<hex>  <path>``.
    """
    folder = Path(folder)
    problems = []
    for line in (folder / MANIFEST).read_text(encoding="utf-8").splitlines():
        digest, name = line.split("  ", 1)
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            problems.append(name)
    return problems
