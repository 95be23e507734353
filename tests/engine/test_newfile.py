"""Restored files are written past the page cache (O_DIRECT) and come out byte for byte."""

import fcntl
import os
import platform
import shutil
import subprocess
import threading

import pytest

from engine.core.errors import UnsafeArchive
from engine.formats import filestore
from engine.service.cli import tune_malloc

CHUNK = filestore.CHUNK
SIZES = [0, 1, 4095, 4096, 4097, 65536 + 3, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 4096 * 7 + 5]


def _resident_pages(path):
    """Pages of ``path`` in the page cache, by util-linux's fincore."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "PAGES", path], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def _pieces(data, sizes):
    """``data`` cut into pieces of the given sizes, cycled (the way a tar or a pack hands them over)."""
    position, index = 0, 0
    while position < len(data):
        step = sizes[index % len(sizes)]
        yield data[position : position + step]
        position += step
        index += 1


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("pieces", [(CHUNK,), (512, 100_000, 7), (CHUNK + 3,)])
def test_a_new_file_holds_exactly_what_was_written(tmp_path, size, pieces):
    data = os.urandom(size)
    path, out = filestore.open_new_file(str(tmp_path), "ab/file", mode=0o640)
    with out:
        for piece in _pieces(data, pieces):
            assert out.write(piece) == len(piece)
    with open(path, "rb") as handle:
        assert handle.read() == data
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_large_files_skip_the_page_cache_where_the_filesystem_allows(tmp_path):
    path, out = filestore.open_new_file(str(tmp_path), "big")
    if not out.direct:
        pytest.fail("direct I/O refused on %s: this test wants a filesystem that takes it (ext4, xfs)" % tmp_path)
    flags = fcntl.fcntl(out.fd, fcntl.F_GETFL)
    assert flags & os.O_DIRECT
    data = os.urandom(3 * CHUNK + 100)
    with out:
        out.write(data)
    # Only the last part block went through the page cache.
    assert _resident_pages(path) <= 1
    with open(path, "rb") as handle:
        assert handle.read() == data

    # The same file written through the page cache stays in it: the check above can fail.
    plain = tmp_path / "plain"
    plain.write_bytes(data)
    assert _resident_pages(str(plain)) >= 3 * CHUNK // 4096


def test_threads_write_at_once_without_mixing_their_bytes(tmp_path):
    blobs = {"t%d" % i: os.urandom(2 * CHUNK + i * 1000 + 1) for i in range(4)}
    errors = []

    def write(name):
        try:
            _path, out = filestore.open_new_file(str(tmp_path), name)
            with out:
                for piece in _pieces(blobs[name], (333_333,)):
                    out.write(piece)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(name,)) for name in blobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for name, data in blobs.items():
        assert (tmp_path / name).read_bytes() == data


def test_a_short_direct_write_goes_on_through_the_page_cache_in_order(tmp_path, monkeypatch):
    """A short write leaves the file offset unaligned; the kernel then refuses the next direct write (EINVAL)
    and the file goes on through the page cache, every byte in its place."""
    real_write = os.write
    shortened = []

    def short_once(fd, data):
        view = memoryview(data).cast("B")
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if not shortened and len(view) > 4096 and flags & os.O_DIRECT:
            # What a kernel's short write does: 1,000 bytes written, the offset moved by as much.
            shortened.append(len(view))
            fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
            written = real_write(fd, view[:1000])
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            return written
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", short_once)
    data = os.urandom(3 * CHUNK + 12345)
    path, out = filestore.open_new_file(str(tmp_path), "f")
    with out:
        for piece in _pieces(data, (CHUNK // 3, 7, CHUNK)):
            out.write(piece)
        assert shortened == [CHUNK]
        assert out.direct is False  # the real kernel refused the misaligned direct write that followed
    monkeypatch.undo()
    with open(path, "rb") as handle:
        assert handle.read() == data


def test_two_files_open_at_once_in_one_thread_keep_their_own_bytes(tmp_path):
    _a, first = filestore.open_new_file(str(tmp_path), "a")
    _b, second = filestore.open_new_file(str(tmp_path), "b")
    with first, second:
        first.write(b"A" * 10000)
        second.write(b"B" * 10000)
    assert (tmp_path / "a").read_bytes() == b"A" * 10000
    assert (tmp_path / "b").read_bytes() == b"B" * 10000


def test_the_descriptor_it_was_given_is_left_without_direct_io(tmp_path):
    """A duplicated descriptor shares its open file's flags: the spooled dump's own descriptor stays usable."""
    with open(tmp_path / "spool", "wb") as handle:
        with filestore.NewFile(os.dup(handle.fileno())) as out:
            out.write(os.urandom(2 * CHUNK))
        assert not fcntl.fcntl(handle.fileno(), fcntl.F_GETFL) & os.O_DIRECT
        handle.write(b"tail")
    assert os.path.getsize(tmp_path / "spool") == 2 * CHUNK + 4


def test_a_write_that_fails_leaves_the_descriptor_closed(tmp_path):
    path, out = filestore.open_new_file(str(tmp_path), "x")
    fd = out.fd
    with pytest.raises(TypeError), out:
        out.write(b"a" * 5000)
        out.write(12345)  # not bytes
    with pytest.raises(OSError):
        os.fstat(fd)
    # An incomplete file, which its caller removes: what was still buffered is not written after the error.
    assert os.path.getsize(path) == 0


def test_the_checks_on_names_still_hold(tmp_path):
    with pytest.raises(UnsafeArchive, match="climbs out"):
        filestore.open_new_file(str(tmp_path), "../x")
    _path, out = filestore.open_new_file(str(tmp_path), "a/b")
    out.close()
    with pytest.raises(UnsafeArchive, match="appears twice"):
        filestore.open_new_file(str(tmp_path), "a/b")
    outside = tmp_path.parent / ("outside-%s" % tmp_path.name)
    outside.mkdir()
    try:
        os.symlink(outside, tmp_path / "link")
        with pytest.raises(UnsafeArchive, match="resolves outside"):
            filestore.open_new_file(str(tmp_path), "link/x")
        assert list(outside.iterdir()) == []
    finally:
        shutil.rmtree(outside)


def test_malloc_is_tuned_on_glibc():
    assert tune_malloc() is (platform.libc_ver()[0] == "glibc")
