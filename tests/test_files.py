"""The one atomic writer, hasher and ``SHA256SUMS`` format."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess

import pytest

from pipeline.files import SUMS_NAME, atomic_write, folder_sha256, read_sums, sha256_file, write_staged, write_sums


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


def test_a_staged_file_lands_under_its_name_alone_and_replaces_an_old_one(tmp_path):
    target = tmp_path / "a.dcm"
    write_staged(target, b"first, longer")
    write_staged(target, memoryview(b"second"))
    assert target.read_bytes() == b"second" and [p.name for p in tmp_path.iterdir()] == ["a.dcm"]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def _tree(root):
    (root / "sub").mkdir(parents=True)
    contents = {"model.stl": os.urandom(70_000), "sub/plan.json": b'{"a": 1}\n', "empty": b""}
    for name, data in contents.items():
        (root / name).write_bytes(data)
    return contents


def test_sums_file_is_what_coreutils_checks_and_reads_back(tmp_path):
    contents = _tree(tmp_path)
    written = write_sums(tmp_path)
    assert written == {name: hashlib.sha256(data).hexdigest() for name, data in sorted(contents.items())}
    assert read_sums(tmp_path / SUMS_NAME) == written
    checked = subprocess.run([shutil.which("sha256sum") or "sha256sum", "--check", "--strict", SUMS_NAME],
                             cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK") == len(contents)


def test_known_digests_are_taken_and_skipped_names_left_out(tmp_path):
    _tree(tmp_path)
    # a stale digest given as known is trusted (the caller hashed the file itself): proof it is not re-read
    assert folder_sha256(tmp_path, skip=("empty",), known={"model.stl": "0" * 64}) == {
        "model.stl": "0" * 64, "sub/plan.json": sha256_file(tmp_path / "sub" / "plan.json")}


@pytest.mark.parametrize("line", ["abc  model.stl", f"{'g' * 64}  model.stl", f"{'a' * 64}  ", "no digest"])
def test_a_malformed_sums_line_is_refused_with_its_number(tmp_path, line):
    (tmp_path / SUMS_NAME).write_text(f"{'a' * 64}  fine.txt\n\n{line}\n")
    with pytest.raises(ValueError, match="line 3 is not"):
        read_sums(tmp_path / SUMS_NAME)


def test_binary_mode_marker_and_upper_case_digests_are_read(tmp_path):
    (tmp_path / SUMS_NAME).write_text(f"{'AB' * 32} *model.stl\n")
    assert read_sums(tmp_path / SUMS_NAME) == {"model.stl": "ab" * 32}
