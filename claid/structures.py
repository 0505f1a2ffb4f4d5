"""The hand-off types between stages, in data-flow order.

image -> PatchGrid -> RegionTree -> RegionDescriptors -> (index) -> Ranking -> metrics

Conventions used everywhere in claid:
- Rows are items: N x D arrays, float32 unless stated.
- Boxes are ``(x1, y1, x2, y2)`` with an *exclusive* end. In patch units for a
  ``RegionTree`` (``x2 - x1`` patches wide); in pixels of the *original* image
  everywhere else (``RegionDescriptors``, queries, ground truth, rankings).
- Image ids are strings: the image path relative to the dataset root, with "/".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from claid.images import DecodeOptions


@dataclass
class PatchGrid:
    """Last-layer patch tokens of one image, as a grid.

    Attributes:
        tokens: (H*W, D) float32, row-major over the grid (row y, column x is
            ``y * W + x``), *un-normalised* (the dummy-node energy uses raw L1 norms).
        grid: (H, W) number of patch rows and columns.
        patch_size: side of one patch in pixels of the network input.
        scale: (sy, sx) original-image pixels per network-input pixel, so a patch
            box ``(x1, y1, x2, y2)`` maps to original pixels as
            ``(x1 * P * sx, y1 * P * sy, x2 * P * sx, y2 * P * sy)``.
        image_size: (height, width) of the original image in pixels.
    """

    tokens: np.ndarray
    grid: tuple[int, int]
    patch_size: int
    scale: tuple[float, float] = (1.0, 1.0)
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        h, w = self.grid
        if self.tokens.ndim != 2 or self.tokens.shape[0] != h * w:
            raise ValueError(
                f"PatchGrid tokens have shape {tuple(self.tokens.shape)}, expected ({h}*{w}, D)"
            )

    def patch_boxes_to_pixels(self, boxes: np.ndarray) -> np.ndarray:
        """Map (R, 4) patch-unit boxes to (R, 4) float32 original-image pixel boxes,
        clipped to the image."""
        sy, sx = self.scale
        p = self.patch_size
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = boxes * np.array([p * sx, p * sy, p * sx, p * sy])
        if self.image_size is not None:
            ih, iw = self.image_size
            out = np.clip(out, 0, [iw, ih, iw, ih])
        return out.astype(np.float32)


@dataclass
class RegionTree:
    """The output regions of the hierarchical decomposition of one image.

    Only *output* nodes are listed: the root and dummy nodes are decomposed but
    never output (unless dummy filtering is off). Order is the order in which
    the nodes were popped (breadth first: parents before children).

    Attributes:
        masks: (R, H, W) bool, the patches of each region.
        boxes: (R, 4) int64, tight box of each mask in patch units,
            ``(x1, y1, x2, y2)`` with exclusive end.
        parent: (R,) int64, index into this tree of the nearest *output*
            ancestor, -1 if none (child of the root or of dummies only).
        depth: (R,) int64, number of bisections from the root to the node (the
            root has depth 0, so every output node has depth >= 1).
        connectivity: (R,) float32, average internal connectivity c(S) of Eq. (9).
        energy_share: (R,) float32, xi(S) = |H & S| / |S| of Eq. (10).
        n_cuts: number of bisections carried out on the image (dummy nodes
            included).
        n_nodes: number of nodes in the full hierarchy (root and dummies included).
        grid: (H, W).
    """

    masks: np.ndarray
    boxes: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    connectivity: np.ndarray
    energy_share: np.ndarray
    n_cuts: int
    n_nodes: int
    grid: tuple[int, int]

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @classmethod
    def empty(cls, grid: tuple[int, int], n_cuts: int = 0, n_nodes: int = 0) -> RegionTree:
        h, w = grid
        return cls(
            masks=np.zeros((0, h, w), dtype=bool),
            boxes=np.zeros((0, 4), dtype=np.int64),
            parent=np.zeros((0,), dtype=np.int64),
            depth=np.zeros((0,), dtype=np.int64),
            connectivity=np.zeros((0,), dtype=np.float32),
            energy_share=np.zeros((0,), dtype=np.float32),
            n_cuts=n_cuts,
            n_nodes=n_nodes,
            grid=(h, w),
        )


@dataclass
class RegionDescriptors:
    """The regions of one image with one descriptor each, ready for the store.

    Attributes:
        image_id: image path relative to the dataset root.
        image_size: (height, width) of the original image in pixels.
        boxes: (R, 4) float32, original-image pixels, exclusive end.
        masks: (R, h, w) bool patch-level masks (the tree's grid), or None.
        depth: (R,) int64; parent: (R,) int64 (index within this image, -1 none).
        vectors: (R, D) float32, L2-normalised rows.
        whole_vector: (D,) float32 L2-normalised descriptor of the whole image (the
            global baseline and the optional whole-image region), pooled from the
            same feature map as the regions; None when not computed.
    """

    image_id: str
    image_size: tuple[int, int]
    boxes: np.ndarray
    masks: np.ndarray | None
    depth: np.ndarray
    parent: np.ndarray
    vectors: np.ndarray
    whole_vector: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


@dataclass
class Query:
    """One search query.

    Attributes:
        image: query image id (relative path), or None for a text query.
        box: (x1, y1, x2, y2) original-image pixels, exclusive end; None = whole image.
        positives: image ids that are relevant.
        junk: image ids removed from the ranking before scoring.
        text: the text of a text-to-instance query, else None.
        qid: a stable identifier used in reports.
        extra: protocol-specific ground truth (e.g. revisited "easy"/"hard" lists).
    """

    image: str | None
    box: tuple[float, float, float, float] | None = None
    positives: list[str] = field(default_factory=list)
    junk: list[str] = field(default_factory=list)
    text: str | None = None
    qid: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Ranking:
    """Ranked database images for one query.

    Attributes:
        qid: the query's id.
        images: (N,) image ids, best first (only images with a score > 0).
        scores: (N,) float32, the image's best region similarity.
        boxes: (N, 4) float32, the best region's box (original pixels): the
            localisation of the query in that image.
    """

    qid: str
    images: list[str]
    scores: np.ndarray
    boxes: np.ndarray


@dataclass
class Scores:
    """Named metric values from one protocol.

    Attributes:
        protocol: e.g. "lab" / "revisited" / "gldv2".
        values: metric name -> value, e.g. {"mAP-50": 0.81, "mAP-all": 0.77}.
        settings: what the protocol did (junk handling, query cropping, IoU kind...).
    """

    protocol: str
    values: dict[str, float]
    settings: dict = field(default_factory=dict)


@dataclass
class Benchmark:
    """A dataset ready for search: the database, the queries and the ground truth.

    Attributes:
        name: e.g. "instre", "roxford5k", "synthetic", "manifest".
        root: folder the image ids are relative to.
        database: image ids searched (query images already removed when the
            protocol says so).
        queries: the queries, ground truth included.
        gt_boxes: image id -> (K, 4) float32 boxes (original pixels, exclusive end)
            of the annotated instances, for localisation metrics; may be empty.
        protocol: how this benchmark is scored, as data, e.g.
            {"family": "lab", "metrics": ["mAP-50", "mAP-100", "mAP-all"],
             "ap": "lab", "query": "crop"}; recorded with every result.
        gt_masks_file: a COCO-format annotation file for detector recall, or None.
        decode: how its files become pixels (:class:`claid.images.DecodeOptions`,
            ``images:`` of the run's config); every stage that decodes reads it.
    """

    name: str
    root: str
    database: list[str]
    queries: list[Query]
    gt_boxes: dict[str, np.ndarray] = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)
    gt_masks_file: str | None = None
    decode: DecodeOptions = field(default_factory=DecodeOptions)

    def path(self, image_id: str) -> str:
        """Absolute path of an image id."""
        import os

        return os.path.join(self.root, image_id)
