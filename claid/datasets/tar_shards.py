"""Images inside tar shards, read where they lie (the WebDataset convention).

A shard is an uncompressed tar whose members are grouped by key: the member name
up to the first dot of its last component (``cat/pos/P000_07.jpg`` and
``cat/pos/P000_07.bbox.json`` are the ``jpg`` and ``bbox.json`` of sample
``cat/pos/P000_07``). An image in a shard has the id ``<shard>/<key>``, the shard's
path relative to the dataset root followed by the key, e.g.
``yfcc100m/000123.tar/8814406352``, so ``Benchmark.path(image_id)`` gives
``<root>/yfcc100m/000123.tar/8814406352``: a path through the shard file that
:func:`claid.images.load_image` (and the header readers beside it) open through
:func:`read_member`.

**The index.** One pass over a shard's tar headers records every member's data
offset and size. It is stored beside the shard (``<shard>.index.json``) or, where
that folder is not writable, under ``$XDG_CACHE_HOME/claid/shard-index/``, with
the shard's size and modification time; an index whose record no longer matches
the shard is rebuilt, and every read checks the shard's size and mtime against the
index it uses, so a shard truncated or replaced after indexing is named
(:class:`ShardChangedError`), never read at a wrong offset. A member with an
absolute name or a ``..`` component is refused when the shard is indexed.

The standard ``tarfile`` module does the one pass (it reports each member's data
offset); ``webdataset`` streams samples without random access and ``wids`` keeps
its index in memory without the size / mtime record, so neither adds what this
needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from claid.artifacts import atomic_write_bytes
from claid.datasets.files import IMAGE_EXTENSIONS, DatasetFormatError

__all__ = ["ShardChangedError", "ShardIndex", "shard_index", "split_member_path", "read_member",
           "member_key"]  # fmt: skip

INDEX_SUFFIX = ".index.json"
_FORMAT = "claid-shard-index"
_VERSION = 1
_IMAGE_EXTS = tuple(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)


class ShardChangedError(DatasetFormatError):
    """A shard no longer has the size / mtime its index was built for."""


def member_key(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: split at the first dot of its last
    component (``a/b/P1.bbox.json`` -> ``("a/b/P1", "bbox.json")``); a leading
    ``./`` (``tar -cf x.tar .``) is not part of the key."""
    while name.startswith("./"):
        name = name[2:]
    head, _, last = name.rpartition("/")
    stem, dot, ext = last.partition(".")
    return (f"{head}/{stem}" if head else stem), (ext if dot else "")


def _check_name(shard: Path, name: str) -> None:
    parts = PurePosixPath(name).parts
    if name.startswith("/") or "\\" in name or ".." in parts or not parts:
        raise DatasetFormatError(f"{shard}: member {name[:200]!r} has an unsafe name; refused")


def _stat(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return int(st.st_size), int(st.st_mtime_ns)


@dataclass
class ShardIndex:
    """Where each member of one shard lies.

    Attributes:
        path: the shard file.
        size, mtime_ns: the shard's size and mtime when indexed.
        members: member name -> (data offset, size) in bytes.
    """

    path: Path
    size: int
    mtime_ns: int
    members: dict[str, tuple[int, int]]
    _samples: dict[str, dict[str, str]] | None = field(default=None, repr=False)

    def samples(self) -> dict[str, dict[str, str]]:
        """key -> {extension: member name}, keys in the shard's order."""
        if self._samples is None:
            samples: dict[str, dict[str, str]] = {}
            for name in self.members:
                key, ext = member_key(name)
                samples.setdefault(key, {})[ext] = name
            self._samples = samples
        return self._samples

    def image_keys(self) -> list[str]:
        """Keys that have an image member, in the shard's order."""
        return [key for key, exts in self.samples().items() if self.image_member(key, exts)]

    def image_member(self, key: str, exts: dict[str, str] | None = None) -> str | None:
        """The image member of ``key`` (the first image extension found), or None."""
        exts = self.samples().get(key, {}) if exts is None else exts
        for ext, name in exts.items():
            if ext.lower() in _IMAGE_EXTS:
                return name
        return None

    def read(self, name: str) -> bytes:
        """The bytes of member ``name``, after checking the shard is the one indexed."""
        offset, size = self.members[name]
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())
            if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
                raise ShardChangedError(
                    f"{self.path}: changed since it was indexed ({st.st_size} bytes, "
                    f"{self.size} when indexed); re-run to re-index it"
                )
            data = os.pread(f.fileno(), size, offset)
        if len(data) != size:
            raise ShardChangedError(f"{self.path}: member {name!r} is cut short")
        return data

    def text(self, key: str, ext: str) -> str | None:
        """Member ``<key>.<ext>`` decoded as UTF-8, or None when the sample lacks it."""
        name = self.samples().get(key, {}).get(ext)
        return None if name is None else self.read(name).decode("utf-8")


def _scan(path: Path) -> ShardIndex:
    size, mtime_ns = _stat(path)
    members: dict[str, tuple[int, int]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                _check_name(path, info.name)
                if not info.isfile():
                    continue
                if info.name in members:
                    raise DatasetFormatError(f"{path}: member {info.name!r} appears twice")
                if info.offset_data + info.size > size:
                    raise DatasetFormatError(f"{path}: truncated (member {info.name!r} ends past it)")
                members[info.name] = (int(info.offset_data), int(info.size))
    except (tarfile.TarError, EOFError) as err:
        raise DatasetFormatError(f"{path}: not a readable uncompressed tar ({err})") from None
    if _stat(path) != (size, mtime_ns):
        raise ShardChangedError(f"{path}: changed while it was being indexed")
    return ShardIndex(path, size, mtime_ns, members)


def _index_files(path: Path) -> list[Path]:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "claid" / "shard-index"
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:20]
    return [path.with_name(path.name + INDEX_SUFFIX), cache / f"{path.name}-{digest}.json"]


def _read_stored(path: Path, stored: Path, size: int, mtime_ns: int) -> ShardIndex | None:
    """The stored index when it is one of this shard as it is now, else None."""
    try:
        record = json.loads(stored.read_text(encoding="utf-8"))
        if (record.get("format"), record.get("version")) != (_FORMAT, _VERSION):
            return None
        if (record.get("size"), record.get("mtime_ns")) != (size, mtime_ns):
            return None
        members: dict[str, tuple[int, int]] = {}
        for name, offset, length in record["members"]:
            if not (isinstance(name, str) and isinstance(offset, int) and isinstance(length, int)):
                return None
            if offset < 0 or length < 0 or offset + length > size:
                return None
            _check_name(path, name)
            members[name] = (offset, length)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ShardIndex(path, size, mtime_ns, members)


#: indexes held in memory, most recently used last (a 100K-image shard's index takes
#: ~50 MB as Python objects: a collection of many shards keeps only a few)
_OPEN: OrderedDict[Path, ShardIndex] = OrderedDict()
_MAX_OPEN = 8
#: (size, mtime) of every shard this process indexed, kept after its index is dropped
_SEEN: dict[Path, tuple[int, int]] = {}


def shard_index(path: str | os.PathLike, *, reindex: bool = False) -> ShardIndex:
    """The index of one shard: in memory, stored (beside it or in the cache) when it
    matches the shard's size and mtime, else built by one pass and stored.

    Args:
        reindex: a loader listing the shard anew: a shard changed since this process
            indexed it is indexed again. False (reading an image listed earlier):
            such a shard is an error.
    Raises:
        DatasetFormatError: not an uncompressed tar, truncated, an unsafe or
            duplicated member name.
        ShardChangedError: the shard changed since this process indexed it
            (``reindex`` False).
    """
    path = Path(path)
    size, mtime_ns = _stat(path)
    seen = _SEEN.get(path)
    if seen is not None and seen != (size, mtime_ns) and not reindex:
        raise ShardChangedError(
            f"{path}: changed since it was indexed ({size} bytes, {seen[0]} when indexed); "
            "re-run to re-index it"
        )
    known = _OPEN.get(path)
    if known is not None and (known.size, known.mtime_ns) == (size, mtime_ns):
        _OPEN.move_to_end(path)
        return known
    candidates = _index_files(path)
    index = None
    for stored in candidates:
        if stored.is_file():
            index = _read_stored(path, stored, size, mtime_ns)
            if index is not None:
                break
    if index is None:
        index = _scan(path)
        record = {"format": _FORMAT, "version": _VERSION, "shard": path.name, "size": index.size,
                  "mtime_ns": index.mtime_ns,
                  "members": [[n, o, s] for n, (o, s) in index.members.items()]}  # fmt: skip
        payload = json.dumps(record).encode("utf-8")
        for stored in candidates:
            try:
                atomic_write_bytes(stored, payload)
                break
            except OSError:
                continue  # a read-only folder: try the cache
    _OPEN[path] = index
    _OPEN.move_to_end(path)
    _SEEN[path] = (index.size, index.mtime_ns)
    while len(_OPEN) > _MAX_OPEN:
        _OPEN.popitem(last=False)
    return index


def split_member_path(path: str | os.PathLike) -> tuple[Path, str] | None:
    """(shard file, key) when ``path`` runs through a ``*.tar`` file
    (``<dir>/x.tar/<key>``), else None."""
    parts = Path(path).parts
    for i, part in enumerate(parts[:-1]):
        if part.endswith(".tar"):
            shard = Path(*parts[: i + 1])
            if shard.is_file():
                return shard, "/".join(parts[i + 1 :])
            return None
    return None


def read_member(path: str | os.PathLike) -> bytes | None:
    """The image bytes of ``<shard>/<key>``, or None when ``path`` runs through no
    shard file.

    Raises:
        DatasetFormatError: the shard has no image under that key, cannot be
            indexed, or changed since it was indexed (:class:`ShardChangedError`).
    """
    found = split_member_path(path)
    if found is None:
        return None
    shard, key = found
    index = shard_index(shard)
    name = index.image_member(key)
    if name is None:
        raise DatasetFormatError(f"{shard}: no image member with key {key[:200]!r}")
    return index.read(name)
