"""The local-descriptor store: per database image, its kept local descriptors, compactly.

Layout of one store folder (``local-<hash>/``, beside the region store; schema
:data:`SCHEMA_VERSION`)::

    store.json    {"schema_version", "kind": "local_features", "key", "encoding", "dim",
                   "bits", "k", "claid_version"}
    data.bin      the records, one per image, back to back
    index.jsonl   one line per stored image, written after its record is on disk:
                  {"image_id", "offset", "n", "grid": [H, W], "sha256"}

A record of ``n`` descriptors is ``descriptors`` (``float16``: n x dim x 2 bytes;
``binary``: n x bits / 8 bytes of packed codes), then their flat grid positions
(``uint16``, row-major ``row * W + col``, highest weight first), then their detector
weights (``float16``), all little-endian: 100 binarised descriptors take 2,000 bytes
(1,600 of codes), 100 float16 ones of dimension 768 take 154,000.

Resumable: records are appended and each index line follows its record's fsync; a store
reopened after a crash drops a torn last line and cuts ``data.bin`` back to the end of
the last indexed record. One writer at a time (a lock file beside the folder).

Read as a stranger's file: ``store.json`` must carry this schema, a known encoding and
sizes that fit; every index line is checked (types, offsets inside ``data.bin``, ``n``
at most ``k``) and every record's SHA-256 before its arrays are used; nothing in it runs
code. A problem raises :class:`~claid.artifacts.DamagedArtifactError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from claid._version import __version__
from claid.artifacts import DamagedArtifactError, atomic_write_bytes, atomic_write_json

SCHEMA_VERSION = 1
ENCODINGS = ("float16", "binary")
_META, _DATA, _INDEX = "store.json", "data.bin", "index.jsonl"


@dataclass(frozen=True)
class LocalFeatures:
    """One image's kept local descriptors.

    Attributes:
        descriptors: (n, dim) float16, or (n, bits / 8) uint8 packed codes.
        positions: (n,) int64 flat grid positions, row-major.
        weights: (n,) float32 detector weights, highest first.
        grid: (H, W) of the patch grid they were selected on.
    """

    descriptors: np.ndarray
    positions: np.ndarray
    weights: np.ndarray
    grid: tuple[int, int]


def row_bytes(encoding: str, dim: int, bits: int) -> int:
    return bits // 8 if encoding == "binary" else 2 * dim


class LocalFeatureStore:
    """A store folder, created (``key`` etc. given) or opened and checked.

    Args:
        directory: the folder.
        key: what produced the descriptors (an existing folder with another key is refused).
        encoding: ``float16`` or ``binary``; dim: descriptor dimension; bits: code length
            (binary); k: descriptors kept per image at most.
    """

    def __init__(self, directory: str | os.PathLike, *, key: dict | None = None, encoding: str = "float16",
                 dim: int = 768, bits: int = 128, k: int = 100) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / _META
        if meta_path.is_file():
            self.meta = _checked_meta(meta_path)
            if key is not None and json.loads(json.dumps(key)) != self.meta["key"]:
                raise ValueError(f"{self.directory} holds local descriptors of another key")
        else:
            if key is None:
                raise DamagedArtifactError(f"{meta_path} is missing: not a local-descriptor store")
            if encoding not in ENCODINGS or dim < 1 or bits < 8 or bits % 8 or k < 1:
                raise ValueError(f"bad local store format: {encoding}, dim {dim}, bits {bits}, k {k}")
            self.directory.mkdir(parents=True, exist_ok=True)
            self.meta = {"schema_version": SCHEMA_VERSION, "kind": "local_features", "key": key,
                         "encoding": encoding, "dim": dim, "bits": bits, "k": k, "claid_version": __version__}
            atomic_write_json(meta_path, self.meta)
        self.encoding, self.dim, self.bits, self.k = (self.meta[n] for n in ("encoding", "dim", "bits", "k"))
        self.row_bytes = row_bytes(self.encoding, self.dim, self.bits)
        self.entries = self._read_index()
        self._data = None

    # ------------------------------------------------------------------ index
    def _read_index(self) -> dict[str, dict]:
        path, data = self.directory / _INDEX, self.directory / _DATA
        size = data.stat().st_size if data.is_file() else 0
        entries: dict[str, dict] = {}
        if not path.is_file():
            return entries
        end, kept = 0, []
        lines = path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                if any(rest.strip() for rest in lines[number:]):
                    raise DamagedArtifactError(f"{path} line {number} is not JSON") from None
                atomic_write_bytes(path, b"".join(k + b"\n" for k in kept))  # a torn last line: dropped
                break
            kept.append(line)
            problem = self._entry_problem(entry, end, size)
            if problem:
                raise DamagedArtifactError(f"{path} line {number}: {problem}")
            entries[entry["image_id"]] = entry
            end = entry["offset"] + self.record_bytes(entry["n"])
        return entries

    def _entry_problem(self, entry, end: int, size: int) -> str | None:
        if not isinstance(entry, dict) or set(entry) != {"image_id", "offset", "n", "grid", "sha256"}:
            return "not an index entry"
        n, offset, grid = entry["n"], entry["offset"], entry["grid"]
        if not isinstance(entry["image_id"], str) or not isinstance(entry["sha256"], str) or len(entry["sha256"]) != 64:
            return "bad image id or checksum"
        if not (isinstance(n, int) and 0 <= n <= self.k and isinstance(offset, int) and offset == end):
            return f"n {n!r} / offset {offset!r} out of place (k {self.k}, expected offset {end})"
        if not (isinstance(grid, list) and len(grid) == 2 and all(isinstance(g, int) and g > 0 for g in grid)
                and grid[0] * grid[1] <= 2**16):
            return f"bad grid {grid!r}"
        if offset + self.record_bytes(n) > size:
            return f"record runs past the end of {_DATA} ({size} bytes)"
        return None

    def record_bytes(self, n: int) -> int:
        """Bytes of one record of ``n`` descriptors."""
        return n * (self.row_bytes + 2 + 2)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    # ------------------------------------------------------------------ write
    def append(self, image_id: str, features: LocalFeatures) -> None:
        """Add one image's descriptors (already stored: nothing done)."""
        if image_id in self.entries:
            return
        record = self._encode(features)
        path, data = self.directory / _INDEX, self.directory / _DATA
        end = max((e["offset"] + self.record_bytes(e["n"]) for e in self.entries.values()), default=0)
        with open(data, "ab") as handle:
            handle.truncate(end)  # drop a record whose index line never came
            handle.seek(end)
            handle.write(record)
            handle.flush()
            os.fsync(handle.fileno())
        entry = {"image_id": image_id, "offset": end, "n": int(features.positions.shape[0]),
                 "grid": [int(g) for g in features.grid], "sha256": hashlib.sha256(record).hexdigest()}
        with open(path, "ab") as handle:
            handle.write(json.dumps(entry).encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.entries[image_id] = entry
        self._data = None

    def _encode(self, features: LocalFeatures) -> bytes:
        n = features.positions.shape[0]
        d = np.asarray(features.descriptors)
        want = (n, self.row_bytes) if self.encoding == "binary" else (n, self.dim)
        dtype = np.uint8 if self.encoding == "binary" else np.float16
        if d.shape != want or n > self.k or features.weights.shape != (n,):
            raise ValueError(f"local features of shape {d.shape} / {features.weights.shape}, expected {want}, "
                             f"at most {self.k}")
        h, w = features.grid
        if n and (features.positions.min() < 0 or features.positions.max() >= h * w):
            raise ValueError("positions outside the grid")
        return (d.astype(np.uint8 if dtype == np.uint8 else "<f2").tobytes()
                + np.asarray(features.positions).astype("<u2").tobytes()
                + np.asarray(features.weights).astype("<f2").tobytes())

    # ------------------------------------------------------------------ read
    def get(self, image_id: str) -> LocalFeatures | None:
        """One image's descriptors, checked (None when not stored)."""
        entry = self.entries.get(image_id)
        if entry is None:
            return None
        if self._data is None:
            self._data = np.memmap(self.directory / _DATA, dtype=np.uint8, mode="r") \
                if (self.directory / _DATA).stat().st_size else np.zeros(0, np.uint8)
        n, offset = entry["n"], entry["offset"]
        record = bytes(self._data[offset : offset + self.record_bytes(n)])
        if hashlib.sha256(record).hexdigest() != entry["sha256"]:
            raise DamagedArtifactError(f"{self.directory / _DATA}: the record of {image_id!r} fails its "
                                       "SHA-256; delete the folder to extract it again")
        cut = n * self.row_bytes
        if self.encoding == "binary":
            descriptors = np.frombuffer(record[:cut], np.uint8).reshape(n, self.row_bytes)
        else:
            descriptors = np.frombuffer(record[:cut], "<f2").reshape(n, self.dim).astype(np.float16)
        positions = np.frombuffer(record[cut : cut + 2 * n], "<u2").astype(np.int64)
        weights = np.frombuffer(record[cut + 2 * n :], "<f2").astype(np.float32)
        grid = (entry["grid"][0], entry["grid"][1])
        if n and positions.max() >= grid[0] * grid[1]:
            raise DamagedArtifactError(f"{self.directory / _DATA}: positions of {image_id!r} outside its grid")
        if self.encoding == "float16" and not np.isfinite(descriptors).all():
            raise DamagedArtifactError(f"{self.directory / _DATA}: non-finite descriptors for {image_id!r}")
        return LocalFeatures(descriptors, positions, weights, grid)

    def bytes_per_image(self) -> float:
        """Mean bytes of ``data.bin`` per stored image."""
        return sum(self.record_bytes(e["n"]) for e in self.entries.values()) / max(1, len(self.entries))


def _checked_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as err:
        raise DamagedArtifactError(f"{path} is not readable JSON ({err})") from None
    fields = {"schema_version": int, "kind": str, "key": dict, "encoding": str, "dim": int, "bits": int, "k": int}
    if not isinstance(meta, dict) or any(not isinstance(meta.get(f), t) for f, t in fields.items()):
        raise DamagedArtifactError(f"{path} is not a local-descriptor store description")
    if meta["schema_version"] != SCHEMA_VERSION or meta["kind"] != "local_features":
        raise DamagedArtifactError(f"{path}: schema {meta['schema_version']} of {meta['kind']!r}; this claid reads "
                                   f"local_features schema {SCHEMA_VERSION}")
    if meta["encoding"] not in ENCODINGS or not (0 < meta["dim"] <= 65536) or meta["bits"] % 8 \
            or not (0 < meta["bits"] <= 65536) or not (0 < meta["k"] <= 65536):
        raise DamagedArtifactError(f"{path}: encoding / sizes out of range")
    return meta
