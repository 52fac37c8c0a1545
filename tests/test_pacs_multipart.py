"""The WADO-RS stream reader: multipart bodies split anywhere, truncated or faulty, and the File
Meta reader that names each part's file, against pydicom; a faulty DICOMweb answer is refused
before any folder is left behind.
"""

from __future__ import annotations

import os
import re

import pydicom
import pytest
from pacs_server import ShortWadoServer, dicom_files

from example_data.cta_phantom import make_phantom, write_dicom_series
from pipeline.errors import PacsError
from pipeline.pacs import pull, resolve_node
from pipeline.pacs.multipart import MultipartError, boundary_of, multipart_parts
from pipeline.pacs.query import instance_file_name
from pipeline.pacs.web import instance_uid_of, write_parts

BOUNDARY = "b0undary-42"
#: Contents that look like a delimiter without being one: CRLF, "--", the boundary without its
#: leading CRLF, a delimiter missing its last character; an empty part; random bytes.
CONTENTS = [b"\r\n--\r\n\r\n" + BOUNDARY.encode() + b"--", b"", b"x\r\n--" + BOUNDARY[:-1].encode() + b"\r\n",
            os.urandom(300), b"\r\n"]


def _body(contents: list[bytes], *, preamble: bytes = b"", epilogue: bytes = b"", headers: bool = True) -> bytes:
    """A multipart body as RFC 2046 5.1.1 writes it (the first part with transport padding)."""
    delimiter = b"--" + BOUNDARY.encode()
    body = preamble + (b"\r\n" if preamble else b"")
    for index, content in enumerate(contents):
        padding = b" \t" if index == 0 else b""
        head = b"Content-Type: application/dicom\r\nContent-Length: %d\r\n" % len(content) if headers else b""
        body += delimiter + padding + b"\r\n" + head + b"\r\n" + content + b"\r\n"
    return body + delimiter + b"--" + epilogue


@pytest.mark.parametrize("preamble, epilogue, headers", [(b"", b"", True), (b"a preamble\r\nof two lines", b"\r\nan epilogue", True),
                                                          (b"", b"\r\n", False)])
def test_parts_come_out_whole_however_the_body_is_split(preamble, epilogue, headers):
    body = _body(CONTENTS, preamble=preamble, epilogue=epilogue, headers=headers)
    splits = [[body[:at], body[at:]] for at in range(len(body) + 1)]
    splits += [[body[at:at + 1] for at in range(len(body))], [body[at:at + 7] for at in range(0, len(body), 7)]]
    for chunks in splits:
        parts = list(multipart_parts(chunks, BOUNDARY))
        assert [content for _, content in parts] == CONTENTS
        assert all(text.startswith("Content-Type: application/dicom\r\n") == headers for text, _ in parts)


def test_a_stream_cut_before_its_close_delimiter_is_refused():
    body = _body(CONTENTS, epilogue=b"\r\nignored")
    close = body.index(b"--" + BOUNDARY.encode() + b"--") + len(BOUNDARY) + 4
    for at in range(close):
        with pytest.raises(MultipartError, match="ended before its closing delimiter"):
            list(multipart_parts([body[:at]], BOUNDARY))
    for at in range(close, len(body) + 1):  # cut in the epilogue: every part has arrived
        assert len(list(multipart_parts([body[:at]], BOUNDARY))) == len(CONTENTS)


def test_a_part_without_its_header_block_is_refused():
    body = b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\nno blank line\r\n--" \
        + BOUNDARY.encode() + b"--"
    with pytest.raises(MultipartError, match="no blank line after its headers"):
        list(multipart_parts([body], BOUNDARY))


def test_boundary_of_content_types():
    assert boundary_of('multipart/related; type="application/dicom"; boundary=abc-1') == "abc-1"
    assert boundary_of('Multipart/Related; boundary="a b;c"; type="application/dicom"') == "a b;c"
    assert boundary_of("multipart/related; type=application/dicom") is None
    assert boundary_of("application/dicom; boundary=abc") is None
    assert boundary_of("") is None


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cta") / "cta"
    write_dicom_series(make_phantom(0.5), folder)
    return folder


def test_file_meta_uid_is_pydicoms(phantom, tmp_path):
    files = dicom_files(phantom)[:5]
    # and a file whose File Meta has more elements of long VRs (OB) and an odd, padded UID
    ds = pydicom.dcmread(files[0])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = "1.2.3.45"
    ds.file_meta.PrivateInformationCreatorUID = "1.2.3"
    ds.file_meta.PrivateInformation = b"\x01\x02"
    ds.save_as(tmp_path / "odd.dcm", enforce_file_format=True)
    for path in [*files, tmp_path / "odd.dcm"]:
        assert instance_uid_of(path.read_bytes()) == str(pydicom.filereader.read_file_meta_info(path)
                                                         .MediaStorageSOPInstanceUID)
    content = files[0].read_bytes()
    for bad in (b"", content[:140], content[:128] + b"DICN" + content[132:], b"not DICOM" * 100):
        assert instance_uid_of(bad) is None


def test_written_parts_are_the_files_byte_for_byte(phantom, tmp_path):
    files = dicom_files(phantom)
    body = _body([p.read_bytes() for p in files])
    chunks = [body[at:at + 65536] for at in range(0, len(body), 65536)]
    uids = write_parts(multipart_parts(chunks, BOUNDARY), tmp_path, what="test")
    expected = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files]
    assert uids == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(instance_file_name(uid) for uid in expected)
    for path, uid in zip(files, expected):
        assert (tmp_path / instance_file_name(uid)).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("mode, message", [
    ("truncated", r"series {series}: the answer broke off after \d+ part\(s\) \(the multipart body ended before its "
                  r"closing delimiter \(truncated\)\)"),
    ("not-dicom", r"series {series}: part {part} of the answer is not a DICOM Part 10 file"),
    ("not-multipart", r"answered the retrieve of series {series} with text/html, not a multipart response"),
    ("short", r"partial retrieve from node {url}: {arrived} of {count} listed instances of series {series} arrived; "
              r"missing 1: instance number\(s\) {number}\. Refused"),
])
def test_a_faulty_dicomweb_answer_is_refused_and_nothing_is_left(phantom, mode, message, tmp_path):
    files = dicom_files(phantom)
    middle = pydicom.dcmread(files[len(files) // 2], stop_before_pixels=True)
    with ShortWadoServer(phantom, mode) as wado:
        facts = {"series": middle.SeriesInstanceUID, "part": len(files) // 2 + 1, "url": wado.url,
                 "arrived": len(files) - 1, "count": len(files), "number": middle.InstanceNumber}
        with pytest.raises(PacsError, match=message.format(**{k: re.escape(str(v)) for k, v in facts.items()})) \
                as caught:
            pull(resolve_node(wado.url), tmp_path / "study", accession=str(middle.AccessionNumber))
    assert f"node {wado.url}" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no folder, no staging, no file half written
