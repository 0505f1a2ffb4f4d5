"""Whether an index dir can be used: its ``search.json`` readable, every file it
records present with its size (and, with ``checksums``, its sha256), and, given the
run's key, built from the same inputs. What ``claid verify``, ``claid search``,
``claid serve`` and the index stage check before they open an index dir."""

from __future__ import annotations

import json
import os

from claid.checksums import record_problems
from claid.index.search_table import read_search_meta


def index_dir_problems(index_dir: str | os.PathLike, *, key: dict | None = None,
                       checksums: bool = True) -> list[str]:
    """What is wrong with an index dir (``index.faiss``, ``index.json``, optional
    ``whitening.npz``, ``regions.npz``, and ``search.json`` holding their records):
    an unreadable or other-schema search.json, a file missing, resized or (with
    ``checksums``) altered, or, given ``key``, a dir built from other inputs (another
    region store content). Empty when it can be used."""
    try:
        meta = read_search_meta(index_dir)
    except (OSError, ValueError) as err:
        return [str(err)]
    problems = []
    records = meta.get("files")
    if not isinstance(records, dict) or not {"index.faiss", "index.json", "regions.npz"} <= set(records):
        problems.append("search.json does not record index.faiss, index.json and regions.npz")
    else:
        problems += record_problems(index_dir, records, checksums=checksums)
    if key is not None and meta.get("key") != json.loads(json.dumps(key)):
        problems.append("built from other inputs than this run's (e.g. the region store changed)")
    return problems
