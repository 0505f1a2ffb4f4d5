"""claid.artifacts: temporaries name their writer, only dead writers' are cleaned,
and file_lock serialises two processes."""

import os
import subprocess
import sys
import time

from claid.artifacts import HOST_TAG, clean_stale_temps, file_lock, is_stale_temp, temp_path


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_temp_names_carry_pid_and_host_and_only_dead_writers_are_stale(tmp_path):
    mine = temp_path(tmp_path / "index-abc")
    assert mine.name.startswith(".index-abc.tmp-") and f"-{os.getpid()}-{HOST_TAG}-" in mine.name
    assert not is_stale_temp(mine.name)
    dead = _dead_pid()
    assert is_stale_temp(f".index-abc.tmp-{dead}-{HOST_TAG}-0123abcd")
    assert is_stale_temp(f".queries-x.npy.tmp-{dead}-0123abcd")  # older name, no host tag
    assert not is_stale_temp(f".index-abc.tmp-{dead}-ffffffff-0123abcd" if HOST_TAG != "ffffffff"
                             else f".index-abc.tmp-{dead}-00000000-0123abcd")  # another host
    assert not is_stale_temp("index-abc") and not is_stale_temp("000001-r000-0123abcd")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # another live process (e.g. a second run writing the same store)
        assert not is_stale_temp(f".000003-r000-0123abcd.tmp-{other.pid}-{HOST_TAG}-0123abcd")
    finally:
        other.kill()
        other.wait()
    assert is_stale_temp(f".000003-r000-0123abcd.tmp-{other.pid}-{HOST_TAG}-0123abcd")


def test_clean_stale_temps_removes_dead_writers_files_and_folders_only(tmp_path):
    dead = _dead_pid()
    (tmp_path / f".index-a.tmp-{dead}-{HOST_TAG}-0123abcd").mkdir()
    (tmp_path / f".index-a.tmp-{dead}-{HOST_TAG}-0123abcd" / "index.faiss").write_bytes(b"x")
    (tmp_path / f".queries-b.npy.tmp-{dead}-{HOST_TAG}-0123abcd").write_bytes(b"x")
    live = temp_path(tmp_path / "index-b")
    live.mkdir()
    (tmp_path / "index-c").mkdir()
    removed = clean_stale_temps(tmp_path)
    assert len(removed) == 2
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, "index-c"])


def test_file_lock_makes_a_second_process_wait(tmp_path):
    lock = tmp_path / "store" / ".lock"
    marks = tmp_path / "marks"
    script = (
        "import sys, time\n"
        "from claid.artifacts import file_lock\n"
        f"open({str(marks)!r}, 'a').write('child waits\\n')\n"
        f"with file_lock({str(lock)!r}):\n"
        f"    open({str(marks)!r}, 'a').write('child in\\n')\n"
    )
    with file_lock(lock):
        child = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
        while not marks.exists() and child.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)  # without the lock the child would get in now
        with open(marks, "a") as f:
            f.write("parent out\n")
    assert child.wait(timeout=60) == 0
    assert marks.read_text().splitlines() == ["child waits", "parent out", "child in"]
