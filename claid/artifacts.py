"""What every stage's artifact shares: its key, how it is written, its schema version.

- **Keys.** An artifact is named by a readable prefix and :func:`config_hash` of its
  own and its upstream configuration (``regions-<hash>``, ``index-<hash>``...), so a
  sweep reuses whatever an earlier run computed with the same settings.
  :func:`database_key` and :func:`dataset_key` are the parts of a key that name a
  benchmark's images (and queries).
- **One durability rule.** Every file is written to a temporary name in the same
  folder (:func:`temp_path`: ``.<name>.tmp-<pid>-<random>``, so two processes never
  share one), flushed and fsynced, then renamed over the final name with
  ``os.replace``, and the folder is fsynced: a reader sees the old file or the new
  one, never half of one, also after a crash or kill -9. Folders are committed the
  same way (:func:`commit_dir`).
- **Ownership of temporaries.** A temporary name carries its writer's process id
  and a tag of its host (``.<name>.tmp-<pid>-<host>-<random>``); only the leftovers
  of a writer that is gone (same host, pid no longer running) are cleaned
  (:func:`clean_stale_temps`), never a live writer's, also another run's.
- **Coordination.** Two processes that would write the same artifact take
  :func:`file_lock` on it: one writes, the other waits and then reuses.
- **Schema versions.** :data:`SCHEMA_VERSIONS` holds one version per artifact kind;
  a reader refuses a version it does not know.
- **Errors a user fixes.** A full disk (ENOSPC, or a full quota) while writing is a
  :class:`DiskFullError` naming the file and the free space left; a damaged artifact
  is a :class:`DamagedArtifactError`. ``run.py`` prints both as one line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import stat
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: The on-disk format version of each kind of artifact. Bump one when its layout changes.
SCHEMA_VERSIONS: dict[str, int] = {
    "region_store": 1,  # regions-<hash>/ (claid/store/)
    "index": 1,  # index-<hash>/index.json (claid/index/region_index.py)
    # 2: the descriptor recorded by registered name + settings (no _target_), file checksums
    "search_table": 2,  # index-<hash>/search.json + regions.npz (claid/index/search_table.py)
    "report": 1,  # <run dir>/metrics.json and rankings.json (claid/report/run_report.py)
    "run_queries": 1,  # <run dir>/queries.json: per-query figures and marks (claid/evaluation/query_records.py)
    "scores": 1,  # scores JSON (claid/evaluation/report.py)
    "feature_cache": 1,  # tokens-<hash>/, featuremaps-<hash>/ (claid/engine/feature_cache.py)
}


class DamagedArtifactError(ValueError):
    """An artifact on disk that is damaged, tampered with, of another schema version or
    built from something else than it says; the message names the file. The stage that
    owns it rebuilds it (with a warning); a reader outside a run reports it."""


class NotRegularFileError(DamagedArtifactError):
    """An output path that exists and is not a regular file (a directory, a device, a
    FIFO, a socket, a symbolic link): claid replaces only files, never those; the
    message names the path and what is there."""


def refuse_non_regular(path: str | os.PathLike) -> None:
    """Raise :class:`NotRegularFileError` when ``path`` exists and is not a regular
    file (a symbolic link is refused whatever it points to: replacing it would
    silently cut a link someone made)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(info.st_mode):
        return
    if stat.S_ISLNK(info.st_mode):
        what = f"a symbolic link to {os.readlink(path)}"
    else:
        kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device",
                 stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
        what = next((name for test, name in kinds.items() if test(info.st_mode)), "not a regular file")
    raise NotRegularFileError(f"{os.fspath(path)}: is {what}; claid writes only regular files there, "
                              "so it leaves it as it is (remove it or choose another output path)")


class DiskFullError(OSError):
    """No space left (or quota exceeded) while writing an artifact; the message names
    the path and the free space of its filesystem. ``errno`` stays ENOSPC / EDQUOT."""

    def __str__(self) -> str:
        return str(self.strerror)


#: errno values that mean "the filesystem is full" rather than "this file is wrong".
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _free_bytes(path: Path) -> str:
    for folder in (path, *path.parents):
        try:
            return f"{shutil.disk_usage(folder).free:,} bytes free"
        except OSError:
            continue
    return "free space unknown"


@contextlib.contextmanager
def disk_full_guard(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ENOSPC / EDQUOT ``OSError`` raised inside the block into one
    :class:`DiskFullError` naming ``path``; also a library's ``RuntimeError`` that
    reports ENOSPC in its text (``faiss.write_index``: "write error in <file>: ...
    (No space left on device)"). Other errors pass unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as err:
        code = getattr(err, "errno", None)
        if code not in _FULL_ERRNOS:
            text = str(err)
            code = next((c for c in _FULL_ERRNOS if os.strerror(c) in text), None)
            if isinstance(err, OSError) or code is None:
                raise
        path = Path(path)
        raise DiskFullError(
            code, f"disk full: cannot write {path} ({os.strerror(code)}; "
            f"{_free_bytes(path.parent)} there); free space or point paths.cache_dir elsewhere"
        ) from err


def schema_version(kind: str) -> int:
    """The schema version this claid writes and reads for artifact ``kind``."""
    return SCHEMA_VERSIONS[kind]


# ----------------------------------------------------------------------------- keys
def config_hash(key: dict, length: int = 12) -> str:
    """Stable short hex hash of a JSON-able dict (key order does not matter).

    Args:
        key: what an artifact is built from (nested dicts, lists, str, numbers, bool, None).
        length: number of hex characters kept (of sha256).
    Raises:
        ValueError: ``cfg`` holds something JSON cannot represent.
    """
    try:
        text = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=True)
    except TypeError as err:
        raise ValueError(f"config_hash needs a JSON-able dict: {err}") from err
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def plain(node: Any) -> dict:
    """A config node (OmegaConf ``DictConfig`` or mapping) as a plain, resolved dict;
    None gives ``{}``."""
    if node is None:
        return {}
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)


def database_key(bench) -> dict:
    """What identifies the database images of a benchmark: the key of every artifact
    computed from them alone (regions, whole-image vectors, cached tokens), so that
    another query split of the same collection (INSTRE-M, synthetic ``split``, ILIAS
    text vs image queries) reuses them."""
    # surrogateescape: a file name that is not valid UTF-8 (os.listdir keeps its raw
    # bytes as lone surrogates) hashes as those bytes instead of aborting the run
    images = "\n".join(bench.database).encode("utf-8", "surrogateescape")
    return {
        "name": bench.name,
        "root": str(Path(bench.root).resolve()),
        "images": hashlib.sha1(images).hexdigest()[:16],
    }


def dataset_key(bench) -> dict:
    """What identifies the images and the queries of a benchmark (query artifacts)."""
    queries = json.dumps(
        [[q.qid, q.image, q.box, q.text] for q in bench.queries], default=json_default
    ).encode()
    return {**database_key(bench), "queries": hashlib.sha1(queries).hexdigest()[:16]}


# ----------------------------------------------------------------------------- writing
log = logging.getLogger(__name__)

#: this machine's tag in temporary names: a pid means something only on its own host
HOST_TAG = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_TEMP_NAME = re.compile(r"\.tmp-(?P<pid>\d+)-(?:(?P<host>[0-9a-f]{8})-)?[0-9a-f]{8}$")


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name a file or folder is written under before it is renamed
    to ``path``: hidden, in the same folder (so the rename is atomic), unique to
    this process and call, and naming its writer (pid and host) so that only a dead
    writer's leftovers are ever cleaned."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{HOST_TAG}-{uuid.uuid4().hex[:8]}")


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_stale_temp(name: str) -> bool:
    """Whether ``name`` is a temporary (from :func:`temp_path`) whose writer is gone:
    written on this host by a process that no longer runs. A temporary of another
    host, or of a live process, is never stale; names without the host tag (older
    claid) count as this host's."""
    match = _TEMP_NAME.search(name)
    if match is None or match.group("host") not in (None, HOST_TAG):
        return False
    return not _pid_running(int(match.group("pid")))


def clean_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Remove the temporaries of dead writers directly inside ``folder`` (files or
    folders, see :func:`is_stale_temp`); a live writer's are left alone.

    Returns:
        The names removed (each logged).
    """
    folder = Path(folder)
    removed = []
    for entry in sorted(os.listdir(folder)) if folder.is_dir() else []:
        if not is_stale_temp(entry):
            continue
        path = folder / entry
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        log.info("removed %s, left by a writer that no longer runs", path)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, what: str = "") -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on the file ``path`` (created if needed)
    for the ``with`` block; another process taking the same lock waits (logged once,
    naming ``what``). Released by the kernel when the process dies, so a killed run
    never leaves a lock behind. Not re-entrant within one process."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another run that holds %s%s", path,
                        f" ({what})" if what else "")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or creation inside folder ``path`` durable (a no-op where the
    filesystem refuses to fsync a folder; the rename itself is still atomic)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_synced(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` and fsync it, in place (for files inside a
    folder that is itself committed atomically, e.g. a store shard).

    Raises:
        DiskFullError: the filesystem is full (the message names ``path``).
    """
    with disk_full_guard(path):
        _write_and_sync(path, payload)


def _write_and_sync(path: str | os.PathLike, payload: bytes) -> None:
    with open(path, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file that a library wrote (e.g. ``faiss.write_index``) to the disk."""
    with disk_full_guard(path), open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Replace ``path`` with ``payload`` atomically and durably (the module's rule).

    Returns:
        ``path`` as a Path.
    Raises:
        DiskFullError: the filesystem is full (``path`` is left as it was).
    """
    path = Path(path)
    refuse_non_regular(path)
    with disk_full_guard(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with disk_full_guard(path):  # name the final file, not its temporary name
            _write_and_sync(tmp, payload)
        refuse_non_regular(path)  # again: something may have been put there meanwhile
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_bytes(obj: Any) -> bytes:
    """``obj`` as indented, key-sorted UTF-8 JSON (numpy values converted)."""
    return json.dumps(obj, indent=1, sort_keys=True, default=json_default).encode("utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Replace ``path`` with ``obj`` as JSON, atomically and durably."""
    return atomic_write_bytes(path, json_bytes(obj))


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in the .npy format (never pickled)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` to ``path`` atomically and durably (no pickled objects)."""
    return atomic_write_bytes(path, npy_bytes(array))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez`` of ``arrays`` to ``path`` atomically and durably."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(a) for name, a in arrays.items()})
    return atomic_write_bytes(path, buffer.getvalue())


def move_into(written: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Move a fully written and synced file into a folder being built (e.g. a
    temporary folder that :func:`commit_dir` commits), in one rename on the same
    file system."""
    os.replace(written, destination)
    return Path(destination)


def commit_dir(tmp: str | os.PathLike, directory: str | os.PathLike) -> Path:
    """Move a fully written folder ``tmp`` (from :func:`temp_path`) to ``directory``
    in one rename, replacing an existing folder of that name: readers see the old
    folder or the new one. The files inside must already be synced."""
    tmp, directory = Path(tmp), Path(directory)
    fsync_dir(tmp)
    if directory.exists():
        old = temp_path(directory)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
    fsync_dir(directory.parent)
    return directory
