"""A detector's COCO file -> the regions of each database image, every entry checked.

Two layouts are read (``RegionsFile.load``):

* COCO **results**: a flat list of ``{"image_id", "bbox": [x, y, w, h], "score"?,
  "segmentation"?}``, the format ``COCO.loadRes`` takes and detectors write;
* a COCO **dataset** dict ``{"images": [...], "annotations": [...]}`` (CutLER's
  pseudo-mask files; scores optional).

An entry names its image by ``file_name`` (the path relative to the dataset root,
which is claid's image id; basenames repeat in INSTRE, so no basename matching) or by
``image_id``, looked up in the file's own ``images`` list, else in ``images_file``
(the dataset's COCO annotation file), else taken as a claid image id when it is one.
Coordinates are original pixels. A ``width`` / ``height`` in an images list must be
the image's; a box overshooting the image by at most one pixel is clipped and
counted; anything else outside, empty or malformed stops the run with one line
naming the file, the entry and why (:class:`RegionsFileError`).

claid's own exports (:mod:`claid.detections.export`) carry ``claid_mask`` (the region's
patch-grid mask, its grid and cell in pixels), ``depth`` and ``parent`` (the parent's
annotation id); when every region of an image has a ``claid_mask`` of one grid, those
masks are used as they are, so a store read back is the store exported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from claid.config.rules import SettingsError
from claid.detections.coco_masks import (
    SegmentationError,
    decode_segmentation,
    runs_box,
    sample_runs,
    segmentation_runs,
)

__all__ = ["FileRegion", "ImageRegions", "RegionsFile", "RegionsFileError"]

log = logging.getLogger(__name__)

#: how far (pixels) a box may reach past the image and still be clipped, not refused
CLIP_TOLERANCE_PX = 1.0
#: the largest image side (pixels) a file may claim for an image
MAX_SIDE_PX = 1 << 17
#: the largest depth (the store keeps it as int32)
MAX_DEPTH = 2**31 - 1


class RegionsFileError(SettingsError):
    """A regions file the run cannot use; the message names the file, the entry and why."""


@dataclass
class FileRegion:
    """One entry of the file, as read (``box`` x1, y1, x2, y2 pixels, None until
    derived from the mask)."""

    where: str
    box: tuple[float, float, float, float] | None
    score: float | None
    segmentation: object | None
    grid_mask: dict | None
    depth: int
    ann_id: object
    parent_id: object


@dataclass
class ImageRegions:
    """The regions of one image, ready to describe.

    Attributes:
        boxes: (R, 4) float32 original pixels, exclusive end, clipped to the image.
        masks: (R, h, w) bool masks on a grid of ``cell`` pixels.
        cell: (cy, cx) original pixels per mask cell.
        has_mask: (R,) bool: the entry had a segmentation (else its mask is its box).
        depth, parent: (R,) int64 (parent: index within the image, -1 none).
    """

    boxes: np.ndarray
    masks: np.ndarray
    cell: tuple[float, float]
    has_mask: np.ndarray
    depth: np.ndarray
    parent: np.ndarray
    clipped: int = 0


def _number(value) -> bool:
    """A finite JSON number (an integer of hundreds of digits is not: no float holds it)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _parse_json(raw: bytes, path) -> object:
    """JSON from a stranger's bytes, or the one-line error (not JSON, an integer
    longer than Python converts, nested deeper than the parser goes)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise RegionsFileError(f"{path}: not usable JSON (nested deeper than the JSON reader "
                               "allows)") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError, integer digit limit
        raise RegionsFileError(f"{path}: not JSON ({str(err)[:200]})") from None


@dataclass
class RegionsFile:
    """The regions of a file, grouped by claid image id (see the module docstring).

    ``counts``: entries read, kept, dropped by ``min_score`` / ``max_regions``, boxes
    clipped, images of the database without an entry.
    """

    path: str
    sha256: str
    by_image: dict[str, list[FileRegion]]
    counts: dict = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def error(self, where: str, why: str) -> RegionsFileError:
        return RegionsFileError(f"{self.path}: {where}: {why}")

    @classmethod
    def load(cls, path: str, database: list[str], *, images_file: str | None = None,
             max_regions: int | None = None, min_score: float | None = None) -> RegionsFile:
        """Read and check the structure of ``path`` (sizes are checked by ``check_sizes``)."""
        raw = _read_bytes(path)
        data = _parse_json(raw, path)
        out = cls(path=str(path), sha256=hashlib.sha256(raw).hexdigest(), by_image={})
        if isinstance(data, list):
            entries, images, label = data, None, "entry"
        elif isinstance(data, dict) and isinstance(data.get("annotations"), list):
            entries, images, label = data["annotations"], data.get("images"), "annotations"
        else:
            raise RegionsFileError(f"{path}: neither a COCO results list nor a dataset dict with "
                                   "'annotations'")
        known = set(database)
        names = out._images_list(images, "images", known) if images is not None else {}
        if not names and images_file:
            names = out._images_list(_load_images_file(images_file), f"{images_file} images", known)
        for k, entry in enumerate(entries):
            where = f"{label}[{k}]"
            if not isinstance(entry, dict):
                raise out.error(where, "not a JSON object")
            image_id = out._image_of(entry, names, known, where)
            out.by_image.setdefault(image_id, []).append(out._region(entry, where))
        out.counts = {"file": str(path), "sha256": out.sha256, "entries": len(entries),
                      "images_in_file": len(out.by_image),
                      "images_without_entries": len(known - set(out.by_image))}
        out._merge_duplicates()
        out._select(max_regions, min_score)
        return out

    def _images_list(self, images, label: str, known: set[str]) -> dict:
        if not isinstance(images, list):
            raise RegionsFileError(f"{self.path}: '{label}' is not a list")
        names = {}
        for k, image in enumerate(images):
            if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
                raise self.error(f"{label}[{k}]", "an image needs 'id' and 'file_name'")
            key = _id_key(image["id"])
            if key is not None:  # an id that cannot be compared matches no entry
                names[key] = image["file_name"]
            if image["file_name"] in known and "width" in image and "height" in image:
                if not all(_number(image[s]) and 1 <= image[s] <= MAX_SIDE_PX for s in ("width", "height")):
                    raise self.error(f"{label}[{k}]", f"width and height must be numbers from 1 to "
                                     f"{MAX_SIDE_PX}, got {image['width']!r:.40} x {image['height']!r:.40}")
                self.sizes[image["file_name"]] = (int(image["height"]), int(image["width"]))
        return names

    def _image_of(self, entry: dict, names: dict, known: set[str], where: str) -> str:
        if "file_name" in entry:
            name = entry["file_name"]
            if not isinstance(name, str) or name not in known:
                raise self.error(where, f"unknown image: file_name {name!r:.80} is not an image of the "
                                 "dataset (a path relative to its root)")
            return name
        if "image_id" not in entry:
            raise self.error(where, "no 'image_id' and no 'file_name'")
        image_id = entry["image_id"]
        key = _id_key(image_id)
        name = names.get(key) if key is not None else None
        if name is None and isinstance(image_id, str) and image_id in known:
            name = image_id
        if name is None:
            raise self.error(where, f"unknown image: image_id {image_id!r:.80} is in no images list "
                             "(the file's, or cutter.images) and is not an image id of the dataset")
        if name not in known:
            raise self.error(where, f"unknown image: image_id {image_id!r} is {name!r}, not an image "
                             "of the dataset")
        return name

    def _region(self, entry: dict, where: str) -> FileRegion:
        box = None
        if "bbox" in entry:
            bbox = entry["bbox"]
            if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
                raise self.error(where, f"bbox must be [x, y, w, h] finite numbers, got {bbox!r:.80}")
            x, y, w, h = (float(v) for v in bbox)
            if w <= 0 or h <= 0:
                raise self.error(where, f"degenerate region: bbox {bbox} has no area")
            box = (x, y, x + w, y + h)
        segmentation = entry.get("segmentation")
        if segmentation is not None and not isinstance(segmentation, (dict, list)):
            raise self.error(where, "segmentation must be an RLE dict or a polygon list")
        if box is None and segmentation is None:
            raise self.error(where, "no bbox and no segmentation")
        score = entry.get("score")
        if score is not None and not _number(score):
            raise self.error(where, f"score must be a finite number, got {score!r:.80}")
        depth = entry.get("depth", 1)
        if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= MAX_DEPTH:
            raise self.error(where, f"depth must be an integer from 1 to {MAX_DEPTH}, got {depth!r:.80}")
        grid_mask = entry.get("claid_mask")
        if grid_mask is not None and not isinstance(grid_mask, dict):
            raise self.error(where, "claid_mask must be an object")
        return FileRegion(where=where, box=box, score=None if score is None else float(score),
                          segmentation=segmentation, grid_mask=grid_mask, depth=depth,
                          ann_id=_id_key(entry.get("id")), parent_id=_id_key(entry.get("parent")))

    def _merge_duplicates(self) -> None:
        """Keep one of entries of an image that are the same detection (same box,
        segmentation, score, depth, claid_mask and parent; their ids may differ, a
        parent naming a dropped id names the kept one); counted in
        ``duplicates_merged`` and warned."""
        merged = 0
        for image_id, regions in self.by_image.items():
            seen, kept, alias = {}, [], {}
            for region in regions:
                key = json.dumps([region.box, region.segmentation, region.score, region.depth,
                                  region.grid_mask, region.parent_id], sort_keys=True)
                first = seen.get(key)
                if first is None or (region.ann_id is not None and first.ann_id is None):
                    seen.setdefault(key, region)
                    kept.append(region)
                    continue
                merged += 1
                if region.ann_id is not None:
                    alias[region.ann_id] = first.ann_id
            for region in kept:
                region.parent_id = alias.get(region.parent_id, region.parent_id)
            self.by_image[image_id] = kept
        self.counts["duplicates_merged"] = merged
        if merged:
            log.warning("%s: %d entries repeat another entry of their image (same box, mask, "
                        "score); each kept once", self.path, merged)

    def _select(self, max_regions: int | None, min_score: float | None) -> None:
        """Keep the entries scoring at least ``min_score`` (an entry without a score is
        kept), then the ``max_regions`` best by score (unscored ones rank after scored
        ones, in file order); the kept entries stay in file order."""
        low = top = 0
        for image_id, regions in self.by_image.items():
            kept = [r for r in regions if min_score is None or r.score is None or r.score >= min_score]
            low += len(regions) - len(kept)
            if max_regions is not None and len(kept) > max_regions:
                order = sorted(range(len(kept)), key=lambda i: (kept[i].score is None, -(kept[i].score or 0.0), i))
                chosen = sorted(order[:max_regions])
                top += len(kept) - max_regions
                kept = [kept[i] for i in chosen]
            self.by_image[image_id] = kept
        self.counts.update(dropped_min_score=low, dropped_max_regions=top,
                           kept=sum(len(r) for r in self.by_image.values()))

    def check_sizes(self, sizes: dict[str, tuple[int, int]]) -> None:
        """Check every image's width / height in the file and every region against the
        image size (``sizes``: image id -> (height, width) as displayed); counts clipped boxes."""
        clipped = 0
        for image_id, (height, width) in sizes.items():
            listed = self.sizes.get(image_id)
            if listed is not None and listed != (height, width):
                raise self.error(f"image {image_id!r}", f"width/height {listed[1]}x{listed[0]} in the file, "
                                 f"the image is {width}x{height}")
            for region in self.by_image.get(image_id, []):
                clipped += self._check_region(region, image_id, height, width)
        self.counts["clipped_boxes"] = self.counts.get("clipped_boxes", 0) + clipped

    def _check_region(self, region: FileRegion, image_id: str, height: int, width: int) -> int:
        where = f"{region.where} (image {image_id!r})"
        if region.segmentation is not None:
            try:  # run lengths only: no full-resolution mask is decoded
                box = runs_box(segmentation_runs(region.segmentation, height, width), height)
            except SegmentationError as err:
                raise self.error(where, f"malformed segmentation: {err}") from None
            if box is None:
                raise self.error(where, "degenerate region: its segmentation covers no pixel of the image")
            if region.box is None:
                region.box = box
        if region.grid_mask is not None:
            grid = region.grid_mask.get("grid")
            # a short RLE can claim a huge grid: no more cells than 16 per pixel of the image
            if isinstance(grid, list) and len(grid) == 2 and all(isinstance(v, int) for v in grid) \
                    and grid[0] * grid[1] > 16 * height * width:
                raise self.error(where, f"claid_mask: grid {grid} is far finer than the {width}x{height} image")
            _grid_mask(region.grid_mask, lambda why: self.error(where, f"claid_mask: {why}"))
        x1, y1, x2, y2 = region.box
        if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            raise self.error(where, f"region wholly outside the {width}x{height} image: box "
                             f"{[x1, y1, x2, y2]} (x1, y1, x2, y2)")
        over = max(-x1, -y1, x2 - width, y2 - height)
        if over > CLIP_TOLERANCE_PX:
            raise self.error(where, f"region outside its image: box {[x1, y1, x2, y2]} reaches "
                             f"{over:g} px past the {width}x{height} image (at most "
                             f"{CLIP_TOLERANCE_PX:g} px is clipped)")
        if over <= 0:
            return 0
        region.box = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
        return 1

    def regions_of(self, image_id: str, height: int, width: int, mask_cell: int) -> ImageRegions:
        """The (checked) regions of one image; masks on claid's own grid when every
        region brings one of the same grid, else on a grid of ``mask_cell`` pixels."""
        regions = self.by_image.get(image_id, [])
        grids = [_grid_mask(r.grid_mask, ValueError) if r.grid_mask is not None else None for r in regions]
        same = bool(regions) and all(g is not None for g in grids) and len(
            {(g[0].shape, g[1]) for g in grids}) == 1
        if same:
            masks = np.stack([g[0] for g in grids])
            cell = grids[0][1]
            has_mask = np.ones(len(regions), dtype=bool)
        else:
            cell = (float(mask_cell), float(mask_cell))
            gh, gw = -(-height // mask_cell), -(-width // mask_cell)
            centre_y = np.minimum(np.arange(gh) * mask_cell + mask_cell // 2, height - 1)
            centre_x = np.minimum(np.arange(gw) * mask_cell + mask_cell // 2, width - 1)
            masks = np.zeros((len(regions), gh, gw), dtype=bool)
            has_mask = np.zeros(len(regions), dtype=bool)
            for k, region in enumerate(regions):
                if region.segmentation is not None:  # sampled at the cell centres from the runs
                    runs = segmentation_runs(region.segmentation, height, width)
                    masks[k] = sample_runs(runs, height, centre_y, centre_x)
                    has_mask[k] = True
                else:
                    x1, y1, x2, y2 = region.box
                    masks[k] = ((centre_y >= y1) & (centre_y < y2))[:, None] & ((centre_x >= x1) & (centre_x < x2))[None]
        index = {r.ann_id: k for k, r in enumerate(regions) if r.ann_id is not None}
        parent = [index.get(r.parent_id, -1) if r.parent_id is not None else -1 for r in regions]
        boxes = np.asarray([r.box for r in regions], dtype=np.float64).reshape(-1, 4)
        return ImageRegions(boxes=boxes.astype(np.float32), masks=masks, cell=cell, has_mask=has_mask,
                            depth=np.asarray([r.depth for r in regions], dtype=np.int64),
                            parent=np.asarray(parent, dtype=np.int64))


def _grid_mask(value: dict, error) -> tuple[np.ndarray, tuple[float, float]]:
    grid, cell = value.get("grid"), value.get("cell")
    if (not isinstance(grid, list) or len(grid) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in grid)):
        raise error(f"grid must be [h, w] positive integers, got {grid!r}")
    if not isinstance(cell, list) or len(cell) != 2 or not all(_number(v) and v > 0 for v in cell):
        raise error(f"cell must be [cy, cx] positive pixel sizes, got {cell!r}")
    try:
        mask = decode_segmentation({"size": grid, "counts": value.get("counts")}, grid[0], grid[1])
    except SegmentationError as err:
        raise error(str(err)) from None
    return mask, (float(cell[0]), float(cell[1]))


def _id_key(value):
    """Ids compare as JSON wrote them (1 and "1" differ); unhashable ones never match."""
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise RegionsFileError(f"{path}: cannot read the regions file ({err.strerror or err})") from None


def _load_images_file(path: str) -> list:
    data = _parse_json(_read_bytes(path), path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise RegionsFileError(f"{path}: no 'images' list (cutter.images must be a COCO dataset file)")
    return data["images"]
