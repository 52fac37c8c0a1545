"""Files written whole or not at all, and their SHA-256: one writer and one hasher for the package.

Every output (models, masks, reports, packets, charges) is written to a temporary file beside its
target, flushed to disk, and renamed over the target; the folder entry is then flushed too. A
crash or a full disk leaves the old file or the new one under the final name, never half of one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

#: Read size for hashing, bytes.
_CHUNK = 1 << 20


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[Path], object], *,
                 mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically: temporary sibling, fsync, rename, fsync the folder.

    Parameters
    ----------
    path : path-like
        Target file; its folder is created if missing.
    data : bytes, str or callable
        The content (text is written as UTF-8), or a function that writes the file at the path it
        is given (for writers that take a file name, such as SimpleITK's); the function's file
        is flushed to disk before the rename.
    mode : int
        Permission bits of the final file (``mkstemp`` would leave it owner-only).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        The folder cannot be written (read-only, full disk); nothing is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the target's suffixes so suffix-driven writers (".nii.gz") pick the right format
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial" + "".join(path.suffixes),
                                    dir=path.parent)
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as stream:
            if isinstance(data, (bytes, bytearray, memoryview)):
                stream.write(data)
            elif isinstance(data, str):
                stream.write(data.encode("utf-8"))
        if callable(data):
            data(temporary)
        _fsync(temporary, os.O_RDONLY)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (``hashlib.file_digest``).

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    str
        64 lower-case hex digits.

    Raises
    ------
    OSError
        The file cannot be read.
    """
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _fsync(path: str | os.PathLike, flags: int) -> None:
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


__all__ = ["atomic_write", "sha256_file"]
