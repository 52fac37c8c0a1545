"""Before work starts: can the output go where it was asked to go? And faults of the machine.

A run that finds at its end that the disk is full or the folder read-only has wasted minutes and
may leave a reserved charge behind. These checks run first, on the folders a command will write,
and raise :class:`~pipeline.errors.EnvironmentFault` (exit 15) naming the path and what to do.
:func:`environment_fault` turns an ``OSError`` met later (the disk filling up mid-run) into the
same one-line error.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path

from pipeline.errors import EnvironmentFault

#: Bytes a model's files take besides its mask (meshes, model.dcm, packet), at most: measured
#: 3.5 MB for the aorta of the synthetic CTA at 2 mm (two STLs and model.dcm of about 1 MB
#: each, a 0.3 MB PDF), taken four times over for finer grids and larger structures.
OUTPUT_BYTES_PER_MODEL = 16 << 20
#: Bytes of a model's mask per source voxel, at most (uint8, written compressed: far less).
MASK_BYTES_PER_VOXEL = 1.0
#: Bytes every run needs whatever the volume (run log, charges, case summary).
OUTPUT_BYTES_FIXED = 8 << 20

#: What to do about each errno, in the words of a lab technician.
_ADVICE = {
    errno.ENOSPC: ("the disk is full", "free space there or choose another output folder"),
    errno.EDQUOT: ("the disk quota is used up", "free space there or choose another output folder"),
    errno.EFBIG: ("the file is larger than this file system or process allows",
                  "choose an output folder on another file system"),
    errno.EROFS: ("the file system is read-only", "choose a writable output folder"),
    errno.EACCES: ("permission denied", "choose a folder you may write, or ask for write permission"),
    errno.EPERM: ("operation not permitted", "choose a folder you may write, or ask for write permission"),
    errno.ENOTDIR: ("a file is in the way where a folder is needed",
                    "give a folder path, or move the file away"),
    errno.EEXIST: ("a file is in the way where a folder is needed", "give a folder path, or move the file away"),
    errno.EISDIR: ("a folder is in the way where a file is needed", "give a file path, or move the folder away"),
    errno.ENAMETOOLONG: ("the path is too long", "choose a shorter output path"),
    errno.ELOOP: ("the path loops through symbolic links", "fix the links or choose another path"),
    errno.EIO: ("the device reported an input/output error", "check the disk, then run again"),
}


def is_environment_error(error: BaseException) -> bool:
    """True for an ``OSError`` that is a fault of the machine (see :data:`_ADVICE`), not a bug.

    Parameters
    ----------
    error : BaseException
        Any exception.

    Returns
    -------
    bool
        True when ``error`` is an ``OSError`` whose ``errno`` is one of :data:`_ADVICE`'s (disk
        full, quota, read-only, permission, a file or folder in the way, path too long, link
        loop, I/O error).
    """
    return isinstance(error, OSError) and error.errno in _ADVICE


def environment_fault(error: OSError, path: str | os.PathLike | None = None) -> EnvironmentFault:
    """The one-line :class:`EnvironmentFault` for an OS error: the path, what happened, what to do.

    Parameters
    ----------
    error : OSError
        The error met while writing or creating ``path``.
    path : path, optional
        The path being written (default: the error's own ``filename``).

    Returns
    -------
    EnvironmentFault
        The error to raise (exit code 15), with a hint of what to do; not raised here.
    """
    what, advice = _ADVICE.get(error.errno, (error.strerror or type(error).__name__, "check the path"))
    where = path if path is not None else (error.filename or "the output")
    return EnvironmentFault(f"cannot write {where}: {what}", hint=advice)


def find_environment_error(error: BaseException) -> OSError | None:
    """The first environment ``OSError`` in ``error`` or the chain of causes behind it, or None.

    Parameters
    ----------
    error : BaseException
        The exception to look through, following ``__cause__``, else ``__context__`` (a cycle
        ends the search).

    Returns
    -------
    OSError or None
        The first one :func:`is_environment_error` accepts, or None.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if is_environment_error(current):
            return current  # type: ignore[return-value]
        current = current.__cause__ or current.__context__
    return None


def output_folder(path: str | os.PathLike) -> Path:
    """Create ``path`` (and its parents) as a writable folder, or raise EnvironmentFault.

    Refuses a path that names a file (or has a file among its parents), a read-only or
    unwritable folder: each as one line with the path and what to do. Writability is proved by
    creating and removing a probe file (permission bits alone lie on root, ACLs and read-only
    mounts).

    Parameters
    ----------
    path : str or path-like
        The output folder.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`, now an existing writable folder.

    Raises
    ------
    EnvironmentFault
        ``path`` or one of its parents is a file, or creating the folder or the probe fails
        (read-only, no permission, disk full, ...). Exit code 15.
    """
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            raise EnvironmentFault(f"cannot use {path} as an output folder: {parent} is a file",
                                   hint="give a folder path, or move the file away")
        if parent.exists():
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".anatomodel-write-probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise environment_fault(error, path) from None
    return path


def writable_file(path: str | os.PathLike) -> Path:
    """Make sure ``path`` can be written (its folder created, the file opened for appending).

    For ``--out FILE`` and ``--log-file``: refuses a folder, a read-only file or folder, and a
    file among the parents, as an :class:`EnvironmentFault`. An existing file is opened for
    appending and left unchanged; a new one is not created (its folder is probed instead), so a
    run that fails later leaves no empty output behind.

    Parameters
    ----------
    path : str or path-like
        The file to be written.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`; its folder exists and is writable.

    Raises
    ------
    EnvironmentFault
        ``path`` is a folder, its folder is refused by :func:`output_folder`, or an existing
        file cannot be opened for appending. Exit code 15.
    """
    path = Path(path)
    if path.is_dir():
        raise EnvironmentFault(f"cannot write {path}: it is a folder", hint="give a file path inside it")
    output_folder(path.parent)
    if path.exists():
        try:
            with path.open("ab"):
                pass
        except OSError as error:
            raise environment_fault(error, path) from None
    return path


def estimate_output_bytes(voxels: int, models: int = 1) -> int:
    """Disk space a run of ``models`` models on a volume of ``voxels`` voxels may need, bytes.

    Each model: :data:`OUTPUT_BYTES_PER_MODEL` plus its mask (:data:`MASK_BYTES_PER_VOXEL` per
    voxel); the run: :data:`OUTPUT_BYTES_FIXED`. An upper bound, so a run refused by
    :func:`free_space` would have come close to filling the disk.

    Parameters
    ----------
    voxels : int
        Voxels of the source volume (a count).
    models : int
        Models of the run; fewer than one counts as one.

    Returns
    -------
    int
        The estimate, bytes.
    """
    per_model = OUTPUT_BYTES_PER_MODEL + MASK_BYTES_PER_VOXEL * int(voxels)
    return int(OUTPUT_BYTES_FIXED + per_model * max(int(models), 1))


def free_space(path: str | os.PathLike, need_bytes: int) -> int:
    """Refuse to start when the file system holding ``path`` has less than ``need_bytes`` free.

    Returns the free bytes. ``path`` is an existing folder (see :func:`output_folder`).

    Parameters
    ----------
    path : str or path-like
        An existing folder on the file system to check.
    need_bytes : int
        Bytes the run needs (e.g. :func:`estimate_output_bytes`).

    Returns
    -------
    int
        Free bytes on that file system (as available to this user).

    Raises
    ------
    EnvironmentFault
        The free space cannot be read, or is less than ``need_bytes`` (the message gives both
        in MB). Exit code 15.
    """
    try:
        free = shutil.disk_usage(path).free
    except OSError as error:
        raise environment_fault(error, path) from None
    if free < need_bytes:
        raise EnvironmentFault(
            f"cannot write {path}: {_mb(free)} free, the run needs about {_mb(need_bytes)}",
            hint="free space there or choose another output folder")
    return free


def _mb(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


__all__ = ["EnvironmentFault", "environment_fault", "estimate_output_bytes", "find_environment_error",
           "free_space", "is_environment_error", "output_folder", "writable_file"]
