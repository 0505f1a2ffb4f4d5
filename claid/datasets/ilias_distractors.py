"""ILIAS distractors as the official downloads leave them, optionally cut to an id list.

``distractors`` names where they are, relative to the dataset root:

- a folder holding ``*.tar`` shards (the download script's ``yfcc100m/``, 100K
  images a shard): every image member, id ``yfcc100m/<shard>.tar/<key>``;
- a folder of image files (an extracted copy), ids ``<folder>/<relative path>``;
- a shard-name prefix in the root (the Hugging Face release's
  ``mini_ilias_yfcc100m-000000.tar`` ...: ``mini_ilias_yfcc100m``);
- ``auto``: ``yfcc100m/`` when that folder exists, else the ``*yfcc100m-*.tar``
  shards in the root.

A named folder or shard set that holds no image is an error, never a core-only run.
``distractor_ids`` (a text file, one id a line, ``.gz`` read too) keeps the
distractors it lists, as the official tools select mini-ILIAS with
``mini_ilias_yfcc100m_ids.txt``: a line matches a shard image by its member key or
by ``<shard file name>/<key>``, a folder image by its relative path or file stem.
``distractor_ids: mini`` is mini-ILIAS from what the root holds: the official list at
``image_ids/mini_ilias_yfcc100m_ids.txt`` (or in the root), else the Hugging Face
``mini_ilias_yfcc100m`` shards as they are (they hold mini-ILIAS only).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path, PurePosixPath

from claid.datasets.files import DatasetFormatError, DatasetNotFoundError, list_images
from claid.datasets.tar_shards import shard_index

__all__ = ["find_distractors", "read_id_list"]

_SHARD_SET = re.compile(r"(.+)-\d+\.tar")
MINI_LIST = "mini_ilias_yfcc100m_ids.txt"
_CORE_ONLY = "set dataset.distractors=null for a core-only run"


def read_id_list(path: str | Path) -> set[str]:
    """The ids of a one-id-a-line text file (``.gz`` too); blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"ilias: distractor id list {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            ids = {line.strip() for line in f}
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"ilias: distractor id list {path} is unreadable ({err})") from None
    ids.discard("")
    if not ids:
        raise DatasetFormatError(f"ilias: distractor id list {path} lists no id")
    return ids


def _auto(root: Path) -> str:
    if (root / "yfcc100m").is_dir():
        return "yfcc100m"
    prefixes = sorted({m.group(1) for p in root.glob("*yfcc100m-*.tar") if (m := _SHARD_SET.fullmatch(p.name))})
    if len(prefixes) == 1:
        return prefixes[0]
    if prefixes:
        raise DatasetFormatError(f"ilias: several distractor shard sets in {root} ({prefixes}); "
                                 "name one with dataset.distractors")  # fmt: skip
    raise DatasetNotFoundError(
        f"ilias: no distractors under {root} (no yfcc100m/ folder, no *yfcc100m-*.tar shards); {_CORE_ONLY}"
    )


def _shard_images(root: Path, shards: list[Path]) -> list[str]:
    ids: list[str] = []
    for shard in shards:
        rel = shard.relative_to(root).as_posix()
        ids.extend(f"{rel}/{key}" for key in shard_index(shard, reindex=True).image_keys())
    return ids


def _matches(image_id: str, selected: set[str], from_shards: bool, folder: str) -> bool:
    if from_shards:
        parts = image_id.split(".tar/", 1)
        key = parts[1]
        return key in selected or f"{PurePosixPath(parts[0]).name}.tar/{key}" in selected
    rel = image_id[len(folder) + 1 :]
    return rel in selected or PurePosixPath(rel).stem in selected


def _mini_list(root: Path, name: str) -> Path | None:
    """The official mini-ILIAS id list under ``root``; None for the mini-ILIAS shards."""
    for candidate in (root / "image_ids" / MINI_LIST, root / MINI_LIST):
        if candidate.is_file():
            return candidate
    if name.startswith("mini_ilias"):
        return None
    raise DatasetNotFoundError(
        f"ilias: distractor_ids=mini needs {root / 'image_ids' / MINI_LIST} (https://vrg.fel.cvut.cz/"
        f"ilias_data/image_ids/{MINI_LIST}) to cut {name!r} to mini-ILIAS"
    )


def find_distractors(
    root: Path, distractors: str, distractor_ids: str | None = None
) -> tuple[list[str], dict]:
    """Distractor image ids (relative to ``root``) and what to record in the protocol.

    Raises:
        DatasetNotFoundError: nothing by that name under ``root``, or no id list file.
        DatasetFormatError: the folder or shard set holds no image, a shard cannot be
            read, or the id list keeps none of them.
    """
    name = _auto(root) if distractors == "auto" else str(distractors)
    where = root / name
    if where.is_dir():
        shards = sorted(where.rglob("*.tar"))
        source = "tar shards" if shards else "image folder"
        ids = _shard_images(root, shards) if shards else [f"{name}/{p}" for p in list_images(where)]
        if not ids:
            raise DatasetFormatError(
                f"ilias: distractor folder {where} holds no image ({len(shards)} tar shard(s)); {_CORE_ONLY}"
            )
    else:
        shards = sorted(p for p in root.glob(f"{name}-*.tar") if _SHARD_SET.fullmatch(p.name))
        shards += [where.with_name(name + ".tar")] if where.with_name(name + ".tar").is_file() else []
        if not shards:
            raise DatasetNotFoundError(
                f"ilias: distractors {name!r}: no folder {where} and no shards {root}/{name}-*.tar; {_CORE_ONLY}"
            )
        source = "tar shards"
        ids = _shard_images(root, shards)
        if not ids:
            raise DatasetFormatError(
                f"ilias: distractor shards {root}/{name}-*.tar ({len(shards)}) hold no image; {_CORE_ONLY}"
            )
    record = {"distractors": name, "core_only": False, "distractor_source": source,
              "n_distractor_shards": len(shards)}
    if distractor_ids == "mini":
        distractor_ids = _mini_list(root, name)
        if distractor_ids is None:
            return ids, {**record, "distractor_ids": f"mini: the {name} shards as they are"}
    if distractor_ids is not None:
        selected = read_id_list(distractor_ids)
        kept = [i for i in ids if _matches(i, selected, source == "tar shards", name)]
        if not kept:
            raise DatasetFormatError(
                f"ilias: none of the {len(selected)} ids of {distractor_ids} is among the "
                f"{len(ids)} distractors of {name!r}"
            )
        record.update(distractor_ids=str(distractor_ids), n_distractor_ids_listed=len(selected),
                      n_distractors_found=len(ids))  # fmt: skip
        ids = kept
    return ids, record
