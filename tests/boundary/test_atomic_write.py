"""The atomic write replaces a regular file (or creates one), and nothing else: a
directory, a FIFO, a device or a symbolic link at the output path is refused in one
line and left as it is."""

import os
import socket

import pytest

from claid.artifacts import NotRegularFileError, atomic_write_bytes, atomic_write_json


def _refused(path) -> str:
    with pytest.raises(NotRegularFileError) as err:
        atomic_write_json(path, {"a": 1})
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: is ")
    return message


def test_a_regular_file_is_replaced_and_a_new_one_created(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"old")
    atomic_write_bytes(tmp_path / "a.bin", b"new")
    atomic_write_bytes(tmp_path / "sub" / "b.bin", b"x")
    assert (tmp_path / "a.bin").read_bytes() == b"new" and (tmp_path / "sub" / "b.bin").exists()


def test_a_directory_is_refused_and_kept(tmp_path):
    (tmp_path / "out.json").mkdir()
    (tmp_path / "out.json" / "keep").write_text("x")
    assert "a directory" in _refused(tmp_path / "out.json")
    assert (tmp_path / "out.json" / "keep").read_text() == "x"


def test_a_fifo_is_refused_and_kept(tmp_path):
    os.mkfifo(tmp_path / "out.json")
    assert "a FIFO" in _refused(tmp_path / "out.json")
    assert os.path.exists(tmp_path / "out.json") and not os.path.isfile(tmp_path / "out.json")


def test_a_device_is_refused(tmp_path):
    os.symlink("/dev/null", tmp_path / "null-link")
    assert "a symbolic link to /dev/null" in _refused(tmp_path / "null-link")
    if os.path.exists("/dev/null") and os.access("/dev", os.W_OK):
        assert "a character device" in _refused("/dev/null")


def test_a_symbolic_link_to_elsewhere_is_refused_and_its_target_untouched(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "precious.json"
    target.write_text("precious")
    os.symlink(target, tmp_path / "out.json")
    assert "a symbolic link to" in _refused(tmp_path / "out.json")
    assert os.path.islink(tmp_path / "out.json") and target.read_text() == "precious"


def test_a_socket_is_refused(tmp_path):
    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        assert "a socket" in _refused(path)
    finally:
        server.close()


def test_no_temporary_is_left_behind_when_refused(tmp_path):
    os.mkfifo(tmp_path / "out.json")
    _refused(tmp_path / "out.json")
    assert sorted(os.listdir(tmp_path)) == ["out.json"]
