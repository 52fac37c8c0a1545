"""A streaming reader of ``multipart/related`` bodies (RFC 2046 section 5.1), as WADO-RS sends them.

Each part is handed on as soon as its closing delimiter has arrived, so the caller can write a
series' first instances while the rest is still on the wire.

Why our own and not a library's (measured on a 500-instance, 251 MiB WADO-RS series from a local
Orthanc): python-multipart's callback parser was slower than this reader; ``multipart`` 2.0
refuses Orthanc's parts; requests_toolbelt's decoder needs the whole body in memory; and
dicomweb-client's decoder is private (``_decode_multipart_message``) and does not report a
stream that ends before its closing delimiter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_CRLF = b"\r\n"


class MultipartError(ValueError):
    """The body is not a complete ``multipart`` body (truncated, or a part without its header block)."""


def boundary_of(content_type: str) -> str | None:
    """The ``boundary`` parameter of a ``multipart/*`` Content-Type header.

    Parameters
    ----------
    content_type : str
        The header's value, e.g. ``multipart/related; type="application/dicom"; boundary=abc``.

    Returns
    -------
    str or None
        The boundary (quotes removed), or None if the type is not multipart or names no boundary.
    """
    if not content_type.strip().lower().startswith("multipart/"):
        return None
    found = re.search(r';\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', content_type, flags=re.IGNORECASE)
    return (found[1] or found[2]) if found else None


def multipart_parts(chunks: Iterable[bytes], boundary: str) -> Iterator[tuple[str, bytes]]:
    """The parts of a multipart body arriving as ``chunks``, each as (header block, content).

    Parameters
    ----------
    chunks : iterable of bytes
        The body in pieces of any size (a delimiter may be split across pieces anywhere).
    boundary : str
        The Content-Type's boundary (:func:`boundary_of`).

    Yields
    ------
    tuple of (str, bytes)
        The part's header lines (Latin-1 text, CRLF-separated; empty if it has none) and its content.

    Raises
    ------
    MultipartError
        The body ends before its closing delimiter (a truncated stream), or a part has no blank
        line ending its header block. The parts before the fault have been yielded.
    """
    delimiter = _CRLF + b"--" + boundary.encode("ascii")
    # The first delimiter may open the body without a CRLF before it: lend it one.
    buffer, chunks, searched, in_part = bytearray(_CRLF), iter(chunks), 0, False
    while True:
        at = buffer.find(delimiter, searched)
        if at < 0 or len(buffer) < at + len(delimiter) + 2:  # 2: enough to tell "--" (the close) apart
            searched = max(0, len(buffer) - len(delimiter) + 1) if at < 0 else at
            chunk = next(chunks, None)
            if chunk is None:
                raise MultipartError("the multipart body ended before its closing delimiter (truncated)")
            buffer += chunk
            continue
        if in_part:
            # after the delimiter: optional transport padding, CRLF, header lines, CRLF CRLF, content
            line_end = buffer.find(_CRLF, 0, at)
            headers_end = buffer.find(_CRLF + _CRLF, line_end, at) if line_end >= 0 else -1
            if headers_end < 0:
                raise MultipartError("a part of the multipart body has no blank line after its headers")
            with memoryview(buffer) as view:  # one copy of the content (a bytearray slice would make two)
                part = bytes(view[line_end + 2:headers_end]).decode("latin-1"), bytes(view[headers_end + 4:at])
            yield part
        after = at + len(delimiter)
        if buffer[after:after + 2] == b"--":
            return  # the close delimiter: what follows is the epilogue, ignored
        del buffer[:after]  # cheap: CPython moves a bytearray's start instead of copying
        searched, in_part = 0, True
