"""The ILIAS core set (queries and positives) in either official download.

``core_items`` reads, from the dataset root:

- the download script's folder ``ilias_core/<instance>/{query,pos}/`` (images with
  ``_bbox.txt`` files of ``x y w h`` lines, text queries ``T<iii>.txt``), or
- the Hugging Face release's WebDataset shards ``ilias-core-queries-*.tar`` and
  ``ilias-core-db-*.tar``, members keyed ``<instance>/query/Q000_00`` /
  ``<instance>/pos/P000_07`` with ``.jpg`` and ``.bbox.json`` (``[[x, y, w, h], ...]``);
  text queries are the ``T<iii>`` samples with a ``.txt`` member in a queries shard,
  else the ``T<iii>.txt`` files of an ``ilias_core/`` folder beside the shards.

Each item is one image query, text query or positive, with its claid image id
(relative to the root), boxes and official id (``<instance>/query/Q000_00.jpg``,
``<instance>/query/T000.txt``, ``<instance>/pos/P000_00.jpg``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from claid.datasets.boxes import xywh_to_xyxy
from claid.datasets.files import DatasetFormatError, list_images
from claid.datasets.tar_shards import ShardIndex, shard_index

__all__ = ["CoreItem", "core_items", "read_bbox_file", "parse_xywh_rows", "core_layout"]


@dataclass(frozen=True)
class CoreItem:
    instance: str
    kind: str  # "query" (image query), "text" or "pos"
    stem: str  # Q000_00, T000, P000_00
    image: str | None  # claid image id, None for a text query
    boxes: np.ndarray | None  # (K, 4) x1 y1 x2 y2
    text: str | None
    official_id: str


def parse_xywh_rows(rows, where: str) -> np.ndarray:
    """(K, 4) float32 x1 y1 x2 y2 from ``[[x, y, w, h], ...]``; K >= 1."""
    try:
        array = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetFormatError(f"{where}: boxes must be [[x, y, w, h], ...]") from None
    if array.ndim == 1 and array.size == 4:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4 or array.shape[0] == 0 or not np.isfinite(array).all():
        raise DatasetFormatError(f"{where}: boxes must be [[x, y, w, h], ...], got shape {array.shape}")
    return xywh_to_xyxy(array)


def _xywh_lines(text: str, where: str) -> np.ndarray:
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) != 4:
            raise DatasetFormatError(f"{where}:{lineno}: expected 'x y w h'")
        try:
            rows.append([float(v) for v in parts])
        except ValueError as err:
            raise DatasetFormatError(f"{where}:{lineno}: not four numbers") from err
    if not rows:
        raise DatasetFormatError(f"{where}: no box")
    return parse_xywh_rows(rows, where)


def read_bbox_file(path: Path) -> np.ndarray:
    """(K, 4) float32 x1 y1 x2 y2 from an ILIAS ``x y w h`` bbox file."""
    return _xywh_lines(Path(path).read_text(encoding="utf-8"), str(path))


def core_layout(root: Path) -> str | None:
    """"folder" (``ilias_core/``), "shards" (``ilias-core-*.tar``) or None."""
    core = root / "ilias_core"
    if core.is_dir() and any((p / "pos").is_dir() for p in core.iterdir()):
        return "folder"
    if any(root.glob("ilias-core-db-*.tar")):
        return "shards"
    return None


def _photos(folder: Path) -> list[str]:
    """Images in ``folder``, without box renderings (``*_bbox.png``)."""
    return [p for p in list_images(folder) if not Path(p).stem.endswith("_bbox")]


def _folder_items(root: Path, texts_only: bool = False) -> list[CoreItem]:
    core = root / "ilias_core"
    items: list[CoreItem] = []
    for inst in sorted(p for p in core.iterdir() if p.is_dir()):
        qdir, pdir = inst / "query", inst / "pos"
        if not texts_only:
            if not pdir.is_dir() or not _photos(pdir):
                raise DatasetFormatError(f"ilias: {inst} has no positives under pos/")
            if not qdir.is_dir():
                raise DatasetFormatError(f"ilias: {inst} has no query/ folder")
            for kind, folder in (("query", qdir), ("pos", pdir)):
                for name in _photos(folder):
                    image = f"ilias_core/{inst.name}/{kind}/{name}"
                    bbox = folder / f"{Path(name).stem}_bbox.txt"
                    if kind == "query" and not bbox.is_file():
                        raise DatasetFormatError(f"ilias: query {image} has no {bbox.name}")
                    boxes = read_bbox_file(bbox) if bbox.is_file() else None
                    items.append(CoreItem(inst.name, kind, Path(name).stem, image, boxes, None,
                                          f"{inst.name}/{kind}/{name}"))  # fmt: skip
        for tpath in sorted(qdir.glob("T*.txt")) if qdir.is_dir() else []:
            text = tpath.read_text(encoding="utf-8").strip()
            if not text:
                raise DatasetFormatError(f"ilias: text query {tpath} is empty")
            items.append(CoreItem(inst.name, "text", tpath.stem, None, None, text,
                                  f"{inst.name}/query/{tpath.name}"))  # fmt: skip
    return items


def _shard_boxes(index: ShardIndex, key: str) -> np.ndarray | None:
    where = f"{index.path.name}/{key}"
    raw = index.text(key, "bbox.json")
    if raw is not None:
        try:
            rows = json.loads(raw)
        except ValueError:
            raise DatasetFormatError(f"ilias: {where}.bbox.json is not JSON") from None
        return parse_xywh_rows(rows, f"{where}.bbox.json")
    raw = index.text(f"{key}_bbox", "txt")
    return None if raw is None else _xywh_lines(raw, f"{where}_bbox.txt")


def _shard_items(root: Path) -> list[CoreItem]:
    items: list[CoreItem] = []
    sets = (("query", sorted(root.glob("ilias-core-queries-*.tar"))),
            ("pos", sorted(root.glob("ilias-core-db-*.tar"))))  # fmt: skip
    for kind, shards in sets:
        for shard in shards:
            index = shard_index(shard, reindex=True)
            for key, exts in index.samples().items():
                instance, stem = key.split("/")[0], key.rsplit("/", 1)[-1]
                member = index.image_member(key, exts)
                if member is None:
                    if kind == "query" and "txt" in exts and stem.startswith("T"):
                        text = index.text(key, "txt").strip()
                        if not text:
                            raise DatasetFormatError(f"ilias: text query {shard.name}/{key} is empty")
                        items.append(CoreItem(instance, "text", stem, None, None, text,
                                              f"{instance}/query/{stem}.txt"))  # fmt: skip
                    continue
                if "/" not in key or stem.endswith("_bbox"):
                    continue
                boxes = _shard_boxes(index, key)
                if kind == "query" and boxes is None:
                    raise DatasetFormatError(f"ilias: query {shard.name}/{key} has no .bbox.json")
                ext = member.rsplit(".", 1)[-1]
                items.append(CoreItem(instance, kind, stem, f"{shard.name}/{key}", boxes, None,
                                      f"{instance}/{kind}/{stem}.{ext}"))  # fmt: skip
    if not any(item.kind == "text" for item in items) and (root / "ilias_core").is_dir():
        items += _folder_items(root, texts_only=True)
    return items


def core_items(root: Path, layout: str) -> list[CoreItem]:
    """Every query and positive of the core set, instances in name order."""
    items = _folder_items(root) if layout == "folder" else _shard_items(root)
    order = {"query": 0, "text": 1, "pos": 2}
    return sorted(items, key=lambda item: (item.instance, order[item.kind], item.stem))
