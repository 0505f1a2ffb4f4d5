"""A flat (exact) FAISS index written straight to its file, one chunk at a time.

An exact index of a 27k-image collection is 4.1 GiB of float32 vectors. Building it
in memory and then writing it holds all of it in anonymous memory; here the
transformed chunks go straight into an ``index.faiss`` that FAISS reads back with
its vectors memory-mapped (``IO_FLAG_MMAP_IFC``), so building and searching it
costs page cache (which the kernel can drop), not anonymous memory.

The file is FAISS's own serialisation of an ``IndexFlatIP``: the 45-byte header that
FAISS writes for an empty index of the same dimension, with its two counts set
(``ntotal`` and the length of the vector array), then the rows. The header's layout
is checked against FAISS before it is used and the file is read back by FAISS
afterwards (count, dimension, first and last row), so a FAISS whose format differs
fails loudly instead of writing a file it cannot read.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

from claid.artifacts import disk_full_guard, fsync_file

#: Byte ranges of an empty IndexFlatIP's serialisation: (start, end) of ntotal
#: (int64) and of the vector array's length in floats (uint64), and the total size.
_NTOTAL, _LENGTH, _HEADER_BYTES = (8, 16), (37, 45), 45


def flat_header(dim: int, n_rows: int) -> bytes:
    """The bytes FAISS writes before the vectors of an ``IndexFlatIP`` of ``n_rows``
    rows of dimension ``dim``.

    Raises:
        RuntimeError: when this FAISS serialises a flat index differently.
    """
    empty = bytes(faiss.serialize_index(faiss.IndexFlatIP(int(dim))))
    expected = (
        len(empty) == _HEADER_BYTES
        and empty[:4] == b"IxFI"
        and struct.unpack("<i", empty[4:8])[0] == dim
        and empty[_NTOTAL[0] : _NTOTAL[1]] == bytes(8)
        and empty[_LENGTH[0] : _LENGTH[1]] == bytes(8)
    )
    if not expected:
        raise RuntimeError(
            f"FAISS {faiss.__version__} serialises an empty IndexFlatIP as {len(empty)} bytes "
            f"{empty[:8]!r}...; claid.index.flat_file expects the 45-byte 'IxFI' layout"
        )
    header = bytearray(empty)
    header[_NTOTAL[0] : _NTOTAL[1]] = struct.pack("<q", int(n_rows))
    header[_LENGTH[0] : _LENGTH[1]] = struct.pack("<Q", int(n_rows) * int(dim))
    return bytes(header)


def write_flat_index(path: str | os.PathLike, dim: int, n_rows: int,
                     chunks: Iterable[np.ndarray]) -> faiss.Index:
    """Write an exact inner-product index of ``n_rows`` rows to ``path`` from
    consecutive (B, dim) chunks, and open it memory-mapped.

    Args:
        path: the file to create (a temporary name: the caller moves it into place).
        dim: the row length.
        n_rows: the number of rows the chunks hold in all.
        chunks: (B, dim) float32 arrays, in row order.
    Returns:
        the FAISS index read back from ``path`` with its vectors memory-mapped.
    Raises:
        ValueError: when the chunks do not hold ``n_rows`` rows of ``dim``.
        DiskFullError: when the disk fills (the partial file is removed).
    """
    path = Path(path)
    written = 0
    first = last = None
    try:
        with disk_full_guard(path), open(path, "wb") as out:
            out.write(flat_header(dim, n_rows))
            for chunk in chunks:
                chunk = np.ascontiguousarray(chunk, dtype="<f4")
                if chunk.ndim != 2 or chunk.shape[1] != dim or written + chunk.shape[0] > n_rows:
                    raise ValueError(f"chunk of shape {chunk.shape} after {written} rows does not "
                                     f"fit an index of {n_rows} x {dim}")
                if chunk.shape[0]:
                    first = chunk[0].copy() if first is None else first
                    last = chunk[-1].copy()
                out.write(chunk.tobytes())
                written += chunk.shape[0]
        if written != n_rows:
            raise ValueError(f"the chunks held {written} rows, the index needs {n_rows}")
        fsync_file(path)
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    flat = faiss.downcast_index(index)
    rows = faiss.rev_swig_ptr(flat.get_xb(), n_rows * dim).reshape(n_rows, dim) if n_rows else None
    if (not isinstance(flat, faiss.IndexFlatIP) or flat.ntotal != n_rows or flat.d != dim
            or (n_rows and not (np.array_equal(rows[0], first) and np.array_equal(rows[-1], last)))):
        path.unlink(missing_ok=True)
        raise RuntimeError(f"FAISS {faiss.__version__} reads {path.name} back as "
                           f"{type(flat).__name__} {flat.ntotal} x {flat.d}, not the "
                           f"{n_rows} x {dim} rows written")
    return index
