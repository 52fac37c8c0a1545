"""Read the pixels of a series' planes into one int16 HU array, hashing the source files.

Uncompressed little-endian pixel data are read straight from the bytes at the offset the header
pass recorded (no dataset is built). Everything else (big endian, deflate, RLE, JPEG lossless,
JPEG-LS, JPEG 2000, HTJ2K) goes through pydicom's pixel decoders and their plugins (pylibjpeg
and its codecs, pyjpegls, GDCM when installed). HU are computed per plane from that plane's
RescaleSlope and RescaleIntercept.
"""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import iter_pixels

from pipeline.errors import DicomError
from pipeline.load.headers import Plane, transfer_syntax_name
from pipeline.threads import helper_thread

DECODER_HINT = (
    "install the decoders: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle "
    "(or python-gdcm)"
)


@dataclass
class DecodeInfo:
    """How the pixels were read."""

    sha256: str
    files: int
    transfer_syntaxes: list[str]
    read_directly: int = 0
    decoded_by_pydicom: int = 0
    rescale_pairs: list[tuple[float, float]] = field(default_factory=list)
    clipped_voxels: int = 0


def _dtype(plane: Plane) -> np.dtype:
    bits = plane.bits_allocated or 16
    if bits not in (8, 16, 32):
        raise DicomError(f"{plane.path.name}: {bits}-bit pixels are not CT data this tool reads")
    kind = "i" if plane.pixel_representation == 1 else "u"
    return np.dtype(f"<{kind}{bits // 8}")


def _stored_range(plane: Plane) -> tuple[int, int]:
    bits = plane.bits_stored or plane.bits_allocated or 16
    if plane.pixel_representation == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _clean_stored(raw: np.ndarray, plane: Plane) -> np.ndarray:
    """Drop bits above BitsStored (overlay/garbage) and sign-extend signed samples."""
    allocated = raw.dtype.itemsize * 8
    stored = plane.bits_stored or allocated
    if stored >= allocated:
        return raw
    if plane.pixel_representation == 1:
        unused = allocated - stored
        return (raw << unused) >> unused
    return raw & np.array((1 << stored) - 1, dtype=raw.dtype)


def to_hu(raw: np.ndarray, plane: Plane, out: np.ndarray) -> int:
    """Write ``raw * slope + intercept`` into the int16 ``out``; returns the clipped voxel count.

    Parameters
    ----------
    raw : (rows, columns) ndarray of int
        One plane's stored values, bits above BitsStored already removed and signed samples
        sign-extended.
    plane : Plane
        The plane's header: RescaleSlope and RescaleIntercept (HU = stored x slope + intercept),
        BitsStored and PixelRepresentation (the stored range, to choose the in-place path).
    out : (rows, columns) ndarray of int16
        Where the HU go (a slice of the volume), overwritten in place.

    Returns
    -------
    int
        Voxels whose HU fell outside -32768..32767 and were clipped to it (rounded to the
        nearest HU first when the slope or intercept is fractional).
    """
    slope, intercept = plane.rescale_slope, plane.rescale_intercept
    low, high = _stored_range(plane)
    if slope == 1 and float(intercept).is_integer() and raw.dtype.itemsize <= 2:
        shift = int(intercept)
        # Where the stored type's range overflows int16 after the shift, this plane's values may not.
        if low + shift < -32768:
            low = int(raw.min())
        if high + shift > 32767:
            high = int(raw.max())
        if -32768 <= low + shift and high + shift <= 32767:
            # Every value fits int16 after the shift: add in place, no wider temporary.
            if raw.dtype == np.uint16 and high <= 32767:
                raw = raw.view(np.int16)
            np.add(raw, np.int16(shift), out=out, casting="unsafe")
            return 0
    if slope == 1 and float(intercept).is_integer():
        hu = raw.astype(np.int64) + int(intercept)
    else:
        hu = np.rint(raw.astype(np.float64) * slope + intercept)
    clipped = int(np.count_nonzero((hu < -32768) | (hu > 32767)))
    np.clip(hu, -32768, 32767, out=hu)
    out[...] = hu
    return clipped


def read_hu(planes: list[Plane], root: Path | None = None) -> tuple[np.ndarray, DecodeInfo]:
    """Pixels of ``planes`` (already in volume order) as an int16 HU array ``(n, rows, cols)``.

    Files are read in sorted path order, each once, so ``DecodeInfo.sha256`` is the SHA-256 of
    the concatenated bytes of the source files in sorted order.

    Parameters
    ----------
    planes : list of Plane
        The planes in volume order (index ``k`` of the result), all of the first plane's rows
        and columns; several may share one multi-frame file.
    root : Path, optional
        The folder the series was found in: messages name files relative to it (else by file
        name only), never by a full path.

    Returns
    -------
    volume : (n, rows, columns) ndarray of int16
        HU, indexed ``(k, j, i)``.
    info : DecodeInfo
        The SHA-256, files read, transfer syntax names, planes read directly or decoded by
        pydicom, the distinct ``(slope, intercept)`` pairs and the count of clipped voxels.

    Raises
    ------
    DicomError
        If a file cannot be read, is truncated, holds fewer pixel bytes than its header says,
        has pixels of other than 8, 16 or 32 bits, decodes to another size than its header,
        or cannot be decoded (a missing decoder plugin, with the install hint; exit code 5).
    """
    rows, columns = planes[0].rows, planes[0].columns
    volume = np.empty((len(planes), rows, columns), dtype=np.int16)
    by_file: dict[Path, list[tuple[int, Plane]]] = defaultdict(list)
    for k, plane in enumerate(planes):
        by_file[plane.path].append((k, plane))
    digest = hashlib.sha256()
    info = DecodeInfo(sha256="", files=len(by_file), transfer_syntaxes=sorted(
        {transfer_syntax_name(p.transfer_syntax_uid) for p in planes}))
    pairs = set()
    # hashlib releases the GIL: hash each file on a second thread while this one converts it.
    # One update in flight at a time keeps the file order and bounds the bytes held.
    with helper_thread("anatomodel-hash") as hasher:
        hashing = None
        for path in sorted(by_file, key=str):
            name = str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else path.name
            try:
                data = path.read_bytes()
            except OSError as error:
                raise DicomError(f"{name}: cannot be read ({error.strerror})") from error
            if hashing is not None:
                hashing.result()
            hashing = hasher.submit(digest.update, data)
            _read_file(data, by_file[path], volume, name, info)
            pairs.update((plane.rescale_slope, plane.rescale_intercept) for _, plane in by_file[path])
        if hashing is not None:
            hashing.result()
    info.sha256 = digest.hexdigest()
    info.rescale_pairs = sorted(pairs)
    return volume, info


def _read_file(data: bytes, entries: list[tuple[int, Plane]], volume: np.ndarray, name: str,
               info: DecodeInfo) -> None:
    """Convert the planes one file holds into their slices of ``volume``."""
    first = entries[0][1]
    if first.truncated:
        raise DicomError(f"{name}: the file is truncated (it ends inside its pixel data)",
                         hint="re-export the series or remove the file")
    if first.native_pixels is not None:
        _read_native(data, entries, volume, name, info)
    else:
        _read_encoded(data, entries, volume, name, info)


def _read_native(data: bytes, entries: list[tuple[int, Plane]], volume: np.ndarray, name: str,
                 info: DecodeInfo) -> None:
    offset, length = entries[0][1].native_pixels
    for k, plane in entries:
        dtype = _dtype(plane)
        count = plane.rows * plane.columns
        start = offset + (plane.frame or 0) * count * dtype.itemsize
        if start + count * dtype.itemsize > min(len(data), offset + length):
            raise DicomError(f"{name}: pixel data shorter than {plane.rows}x{plane.columns} samples",
                             hint="re-export the series")
        raw = np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(plane.rows, plane.columns)
        info.clipped_voxels += to_hu(_clean_stored(raw, plane), plane, volume[k])
        info.read_directly += 1


def _read_encoded(data: bytes, entries: list[tuple[int, Plane]], volume: np.ndarray, name: str,
                  info: DecodeInfo) -> None:
    syntax = transfer_syntax_name(entries[0][1].transfer_syntax_uid)
    wanted = {plane.frame or 0: (k, plane) for k, plane in entries}
    try:
        if len(entries) == 1 and entries[0][1].frame is None:
            frames = [pydicom.dcmread(io.BytesIO(data)).pixel_array]
        else:
            frames = iter_pixels(io.BytesIO(data), indices=sorted(wanted))
        for index, frame in zip(sorted(wanted), frames):
            k, plane = wanted[index]
            if frame.shape != (plane.rows, plane.columns):
                raise DicomError(f"{name}: decoded frame is {frame.shape}, header says {plane.rows}x{plane.columns}")
            info.clipped_voxels += to_hu(_clean_stored(frame, plane), plane, volume[k])
            info.decoded_by_pydicom += 1
    except DicomError:
        raise
    except (RuntimeError, NotImplementedError, ValueError, OSError, EOFError, KeyError, AttributeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        missing = "plugin" in message.lower() or "decoder" in message.lower() or "missing" in message.lower()
        raise DicomError(f"{name}: cannot decode its {syntax} pixel data ({message})",
                         hint=DECODER_HINT if missing else "the file may be damaged; re-export the series") from error
