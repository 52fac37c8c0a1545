"""The one atomic writer and hasher."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from pipeline.files import atomic_write, sha256_file


def test_bytes_text_and_writer_functions_land_whole(tmp_path):
    target = tmp_path / "sub" / "a.bin"
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    atomic_write(target, "héllo")
    assert target.read_bytes() == "héllo".encode()
    atomic_write(tmp_path / "b.nii.gz", lambda temporary: temporary.write_bytes(temporary.name.encode()))
    written = (tmp_path / "b.nii.gz").read_bytes().decode()
    assert written.endswith(".nii.gz")  # the writer saw the target's suffixes
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.nii.gz", "sub"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")

    def broken(temporary):
        temporary.write_text("half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_sha256_matches_hashlib(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "x"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
