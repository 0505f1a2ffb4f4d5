"""``cutter=from_file``: regions read from another detector's COCO file, not cut.

The shell of :mod:`claid.detections`: it holds the settings (a misspelled key is an
error) and says what keys the store: the file's and the images file's **content**
(sha256), never their paths, and no backbone (none is built or loaded, and no token
cache is read). Its regions are described, stored, indexed, searched, evaluated and
logged by the same stages as any cutter's (:func:`claid.detections.file_regions.extract_from_file`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

from claid.artifacts import plain


@dataclass(frozen=True)
class FromFileSettings:
    path: str = ""  # COCO results list or COCO dataset dict (claid/detections/read.py)
    images: str | None = None  # a COCO file whose "images" list maps image_id -> file_name
    max_regions: int | None = None  # keep the best this many per image (by score)
    min_score: float | None = None  # keep entries scoring at least this (unscored: kept)
    mask_cell: int = 1  # pixels per cell of the stored masks of pixel segmentations

    def __post_init__(self) -> None:
        from claid.config.rules import SettingsError

        if not isinstance(self.path, str):
            raise SettingsError(f"cutter.path must be a file path, got {self.path!r}")
        if self.max_regions is not None and (not isinstance(self.max_regions, int) or self.max_regions < 1):
            raise SettingsError(f"cutter.max_regions must be null or an integer >= 1, got {self.max_regions!r}")
        if self.min_score is not None and not isinstance(self.min_score, (int, float)):
            raise SettingsError(f"cutter.min_score must be null or a number, got {self.min_score!r}")
        if not isinstance(self.mask_cell, int) or self.mask_cell < 1:
            raise SettingsError(f"cutter.mask_cell must be an integer >= 1, got {self.mask_cell!r}")


class FromFileCutter:
    """Regions from a file; it cuts nothing (calling it on a PatchGrid is an error)."""

    SETTINGS = FromFileSettings
    NAME = "from_file"
    reads_regions_from_file = True

    def __init__(self, **settings: Any) -> None:
        self.settings = FromFileSettings(**settings)

    def config(self) -> dict[str, Any]:
        return {"cutter": self.NAME, **dataclasses.asdict(self.settings)}

    def load(self, database: list[str]):
        """The file's regions of ``database`` (:class:`claid.detections.read.RegionsFile`)."""
        from claid.detections.read import RegionsFile

        s = self.settings
        file_sha256(s.path)  # an unset or unreadable path: its one line
        return RegionsFile.load(s.path, database, images_file=s.images,
                                max_regions=s.max_regions, min_score=s.min_score)

    def __call__(self, patch_grid):
        raise TypeError("cutter=from_file reads its regions from cutter.path; it does not cut tokens")


def reads_from_file(node) -> bool:
    """Whether a ``cutter`` config node is ``from_file``."""
    target = (node or {}).get("_target_", "")
    return target.rsplit(".", 1)[-1] == FromFileCutter.__name__


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes (a missing file is the one-line RegionsFileError)."""
    from claid.detections.read import RegionsFileError

    if not path:
        raise RegionsFileError("cutter.path must name the regions file (cutter=from_file cutter.path=results.json)")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise RegionsFileError(f"{path}: cannot read the regions file ({err.strerror or err})") from None
    return digest.hexdigest()


def file_store_key(cutter_node, key: dict) -> dict:
    """``key`` (:func:`claid.engine.extraction_stage.store_key`) for a ``from_file`` cutter: the
    files' paths replaced by their contents' sha256 and no backbone; other cutters'
    keys unchanged."""
    if not reads_from_file(cutter_node):
        return key
    cutter = plain(cutter_node)
    cutter["path"] = {"sha256": file_sha256(cutter["path"])}
    if cutter.get("images"):
        cutter["images"] = {"sha256": file_sha256(cutter["images"])}
    return {**key, "cutter": cutter, "backbone": None}
