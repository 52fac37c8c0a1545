"""Model folders on disk: checksums, completeness, and publishing a staging folder atomically.

A model folder ``OUT/<case_id>/<model_id>/`` is complete when its ``SHA256SUMS`` lists every
other file of the folder (recursively) and each listed file has that checksum. A new folder is
built in a staging sibling and put in place by one ``rename``; replacing an earlier version
swaps the two folders with ``renameat2(RENAME_EXCHANGE)`` (Linux), so at every instant the
destination is either the old complete folder or the new one.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path

from pipeline.files import SUMS_NAME, fsync_path, read_sums, sha256_file

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def folder_problems(folder: str | os.PathLike, sums_sha256: str | None = None) -> list[str]:
    """Everything missing or changed in a model folder, as readable sentences (empty if intact).

    Parameters
    ----------
    folder : path
        The model folder.
    sums_sha256 : str, optional
        The SHA-256 its ``SHA256SUMS`` had when recorded; a different file is reported.

    Returns
    -------
    list of str
        One sentence per problem (folder or ``SHA256SUMS`` missing, ``SHA256SUMS`` changed,
        unreadable or empty, a listed file missing or changed, a file not listed); empty when the
        folder is intact.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder}: folder missing"]
    sums_path = folder / SUMS_NAME
    if not sums_path.is_file():
        return [f"{sums_path}: missing"]
    problems = []
    if sums_sha256 is not None and sha256_file(sums_path) != sums_sha256:
        problems.append(f"{sums_path}: changed since it was recorded")
    try:
        sums = read_sums(sums_path)
    except (ValueError, UnicodeDecodeError) as error:
        return [*problems, str(error)]
    if not sums:
        problems.append(f"{sums_path}: lists no files")
    for name, digest in sorted(sums.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: changed (checksum differs from {SUMS_NAME})")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    for name in sorted(present - set(sums) - {SUMS_NAME}):
        problems.append(f"{folder / name}: not listed in {SUMS_NAME}")
    return problems


def fsync_tree(folder: str | os.PathLike) -> None:
    """Flush every file and directory of a folder to stable storage.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder; every file under it and every directory (itself included) is fsynced.

    Raises
    ------
    OSError
        If a file or directory cannot be opened or flushed.
    """
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root, folder=True)


def backup_path(staging: str | os.PathLike) -> Path:
    """Where the fallback publisher parks the previous folder while swapping.

    Parameters
    ----------
    staging : str or os.PathLike
        The staging folder.

    Returns
    -------
    Path
        ``<staging>.previous``.
    """
    return Path(f"{os.fspath(staging)}.previous")


def publish_folder(staging: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Put ``staging`` in place of ``destination`` atomically.

    Afterwards ``staging`` holds the previous folder if there was one (delete it with
    :func:`remove_folder`). Where ``RENAME_EXCHANGE`` is unavailable, the previous folder is
    moved to :func:`backup_path` first; :func:`restore_backup` undoes an interrupted swap.

    Parameters
    ----------
    staging : str or os.PathLike
        The complete new folder (a sibling of ``destination``, on the same file system).
    destination : str or os.PathLike
        The model folder to put it at; need not exist yet.

    Raises
    ------
    OSError
        If a rename or ``renameat2`` fails for another reason than the system lacking the
        exchange (e.g. permissions, another file system).
    """
    staging, destination = os.fspath(staging), os.fspath(destination)
    if not os.path.exists(destination):
        os.rename(staging, destination)
    elif not _exchange(staging, destination):
        backup = os.fspath(backup_path(staging))
        os.rename(destination, backup)
        os.rename(staging, destination)
        os.rename(backup, staging)
    fsync_path(os.path.dirname(destination) or ".", folder=True)


def restore_backup(staging: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Undo a fallback swap that stopped after moving the previous folder aside.

    Parameters
    ----------
    staging : str or os.PathLike
        The staging folder of the interrupted attempt.
    destination : str or os.PathLike
        Its model folder; the backup is moved back only when it is missing.
    """
    backup = backup_path(staging)
    if backup.is_dir() and not os.path.exists(destination):
        os.rename(backup, destination)


def remove_folder(path: str | os.PathLike) -> None:
    """Delete a folder tree if it exists (a staging folder or a replaced version).

    Parameters
    ----------
    path : str or os.PathLike
        The folder to delete, with its ``.previous`` backup; errors are ignored (missing is fine).
    """
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(backup_path(path), ignore_errors=True)


def _exchange(first: str, second: str) -> bool:
    """Swap two paths with ``renameat2(RENAME_EXCHANGE)``; False if the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), first, None, second)
