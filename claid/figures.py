"""Pictures logged with every run: the region hierarchy (paper Fig. 1/3), a
search-results grid (Fig. 6) and recall-vs-IoU curves (Fig. 7).

All functions draw with matplotlib's Agg backend and write a PNG to ``path``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches as mpatches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from claid.images import original_size  # noqa: E402
from claid.structures import Query, Ranking  # noqa: E402

_COLORS = plt.get_cmap("tab20").colors


#: Pixels a figure's photos are decoded at (at least, on the long side): panels are
#: ~300 px wide, and a full 12 MP decode would cost GBs in matplotlib.
FIGURE_LONG_SIDE = 800

#: Longest figure title kept, in characters: a longer qid or file name is cut in the
#: middle (a 30 MB qid once hung matplotlib's text layout).
TITLE_CHARS = 60


def short_title(text: str, limit: int = TITLE_CHARS) -> str:
    """``text`` as a one-line figure title of at most ``limit`` characters: line
    breaks become spaces, characters that cannot be drawn (lone surrogates: the raw
    bytes of a file name that is not UTF-8) become "?", and a longer text keeps its
    start and end around "...".
    The middle is cut with slicing before anything else, so the cost does not
    grow with the size of ``text``."""
    text = str(text)
    if len(text) > limit:
        head = (limit - 3) // 2
        text = text[:head] + "..." + text[len(text) - (limit - 3 - head):]
    text = text.encode("utf-8", "replace").decode("utf-8")
    return " ".join(text.split())


def _upsample_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) bool patch mask -> (H, W) bool at image size (nearest)."""
    h, w = size
    rows = np.minimum((np.arange(h) * mask.shape[0]) // h, mask.shape[0] - 1)
    cols = np.minimum((np.arange(w) * mask.shape[1]) // w, mask.shape[1] - 1)
    return mask[rows][:, cols]


def hierarchy_figure(
    image: Image.Image,
    masks: np.ndarray,
    depth: np.ndarray,
    path: str | Path,
    max_levels: int = 4,
    title: str = "",
) -> Path:
    """Draw the image and, per hierarchy depth, the output regions in colour.

    Args:
        image: the original image.
        masks: (R, h, w) bool patch-level region masks.
        depth: (R,) int depth of each region (1 = children of the root).
        path: PNG to write.
        max_levels: how many depth levels get a panel (deeper ones join the last).
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    depth = np.asarray(depth, dtype=np.int64)
    levels = sorted(set(depth.tolist()))[:max_levels]
    fig, axes = plt.subplots(1, len(levels) + 1, figsize=(3.2 * (len(levels) + 1), 3.4))
    axes = np.atleast_1d(axes)
    axes[0].imshow(rgb)
    axes[0].set_title(short_title(title or "image"), fontsize=9)
    for ax, level in zip(axes[1:], levels):
        overlay = rgb * 0.35
        chosen = np.flatnonzero(depth == level) if level != levels[-1] else np.flatnonzero(depth >= level)
        for k, r in enumerate(chosen):
            m = _upsample_mask(np.asarray(masks[r], bool), rgb.shape[:2])
            overlay[m] = 0.45 * rgb[m] + 0.55 * np.array(_COLORS[k % len(_COLORS)])
        ax.imshow(np.clip(overlay, 0, 1))
        ax.set_title(f"depth {level}{'+' if level == levels[-1] else ''}: {len(chosen)} regions", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _show(ax, image: Image.Image, box, edge: str, box_color: str = "yellow") -> None:
    # axes in the file's pixels, so boxes land right on an image decoded smaller
    height, width = original_size(image)
    ax.imshow(np.asarray(image.convert("RGB")), extent=(0, width, height, 0))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(edge)
        spine.set_linewidth(5)
    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in box)
        ax.add_patch(
            mpatches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=box_color, linewidth=2)
        )


def results_grid_figure(
    queries: Sequence[Query],
    rankings: Sequence[Ranking],
    open_image: Callable[[str], Image.Image],
    path: str | Path,
    ranks: Sequence[int] = (1, 2, 3, 5, 10),
) -> Path:
    """One row per query: the query (blue border, its box), then the images at the
    given 1-based ranks with the localised box; green border = positive, red = not.
    """
    by_qid: Mapping[str, Ranking] = {r.qid: r for r in rankings}
    rows = [q for q in queries if q.qid in by_qid and q.image is not None]
    if not rows:
        raise ValueError("no image query with a ranking to draw")
    fig, axes = plt.subplots(len(rows), len(ranks) + 1, figsize=(2.4 * (len(ranks) + 1), 2.4 * len(rows)))
    axes = np.atleast_2d(axes)
    for row, query in zip(axes, rows):
        _show(row[0], open_image(query.image), query.box, edge="blue")
        row[0].set_title(short_title(f"query {query.qid}"), fontsize=8)
        ranking = by_qid[query.qid]
        positives = set(query.positives)
        for ax, rank in zip(row[1:], ranks):
            if rank > len(ranking.images):
                ax.axis("off")
                continue
            image_id = ranking.images[rank - 1]
            hit = image_id in positives
            _show(ax, open_image(image_id), ranking.boxes[rank - 1], edge="green" if hit else "red")
            ax.set_title(f"#{rank}  {ranking.scores[rank - 1]:.2f}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def recall_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str = ""
) -> Path:
    """Recall against IoU threshold, one line per named curve (thresholds, recalls)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for name, (thresholds, recalls) in curves.items():
        ax.plot(list(thresholds), list(recalls), marker="o", label=name)
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("recall")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(short_title(title or "recall vs IoU"), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run_figures(bench, store, rankings: Sequence[Ranking], run_dir: Path, report: dict, *,
                n_images: int = 4, n_queries: int = 6) -> dict[str, str]:
    """The pictures of one run, in ``run_dir``: the hierarchy of the first
    ``n_images`` images with regions, a results grid of the first ``n_queries``
    image queries and the recall curve (when the report has one). A failing picture
    fails the run: best effort is not allowed to hide errors.

    Returns:
        {artifact name: PNG path}.
    """
    from claid.images import load_image

    def open_image(image_id: str) -> Image.Image:  # a 12 MP photo is drawn from ~1000 px
        return load_image(bench.path(image_id), long_side_needed=lambda h, w: FIGURE_LONG_SIDE)

    out: dict[str, str] = {}
    region_image = np.asarray(store.region_image())
    depth = np.asarray(store.depth())
    shown = 0
    for i, image_id in enumerate(store.image_ids):
        if shown >= n_images:
            break
        rows = np.flatnonzero(region_image == i)
        if len(rows) == 0:
            continue
        masks = store.masks(rows)
        path = Path(run_dir) / f"hierarchy_{shown}.png"
        hierarchy_figure(open_image(image_id), masks, depth[rows], path, title=image_id)
        out[f"hierarchy_{shown}"] = str(path)
        shown += 1
    image_queries = [q for q in bench.queries if q.image is not None][:n_queries]
    if rankings and image_queries:
        path = results_grid_figure(image_queries, rankings, open_image,
                                   Path(run_dir) / "results_grid.png")
        out["results_grid"] = str(path)
    if "recall_vs_iou" in report:
        curve = report["recall_vs_iou"]
        path = recall_figure({"CLAID": (curve["iou"], curve["recall"])},
                             Path(run_dir) / "recall_vs_iou.png", title=bench.name)
        out["recall_vs_iou"] = str(path)
    return out
