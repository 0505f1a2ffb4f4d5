"""Pictures logged with every run and every sweep: the region hierarchy (paper
Fig. 1/3) with its tree, a search-results grid (Fig. 6), recall-vs-IoU curves
(Fig. 7), and a sweep's metrics against its swept values (Fig. 8).

``draw_*`` functions return a ``matplotlib.figure.Figure`` (no pyplot, no backend
change: importing this module leaves a notebook's backend alone); ``*_figure``
functions draw and write a PNG to ``path`` (:func:`save_figure`). Every picture
takes a ``caption`` (the run name or swept values, and the dataset) for its title,
so a downloaded picture still says which configuration made it.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from PIL import Image

from claid.artifacts import atomic_write_bytes
from claid.drawn_regions import drawn_regions, tree_layout
from claid.images import original_size
from claid.masks import patch_mask_to_pixels
from claid.structures import Query, Ranking

_COLORS = matplotlib.colormaps["tab20"].colors
QUERY_BOX, LOCAL_BOX = "deepskyblue", "yellow"


def save_figure(fig: Figure, path: str | Path, dpi: int = 90) -> Path:
    """Write ``fig`` as a PNG atomically (:func:`claid.artifacts.atomic_write_bytes`);
    returns ``path``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


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


def _wrap(text: str, width: int) -> str:
    """``text`` wrapped at ``width`` characters, at most eight lines of it
    (:func:`short_title` cuts the rest)."""
    text = short_title(text, 8 * max(10, width)) if text else ""
    return "\n".join(textwrap.wrap(text, width=max(10, width))) if text else ""


def _draw_tree(ax, parent: np.ndarray, depth: np.ndarray, colors: list) -> None:
    """The hierarchy as a tree: the root (depth 0), each output region at its depth
    in its panel colour, an edge to its nearest output ancestor; an edge that skips
    levels passes through hollow grey markers, the decomposed nodes that are not
    output (dummy nodes, or nodes filtered out)."""
    x = tree_layout(parent)
    root_x = float(np.mean(x[parent < 0])) if len(x) else 0.0
    ax.scatter([root_x], [0], s=120, color="black", zorder=3)
    ax.annotate("root", (root_x, 0), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7)
    for node in range(len(parent)):
        up = int(parent[node])
        ux, ud = (root_x, 0) if up < 0 else (x[up], int(depth[up]))
        d = int(depth[node])
        skipped = d - ud - 1
        ax.plot([ux, x[node]], [-ud, -d], color="grey", lw=1, ls="--" if skipped else "-", zorder=1)
        for level in range(1, skipped + 1):
            t = level / (d - ud)
            ax.scatter([ux + t * (x[node] - ux)], [-(ud + level)], s=50, facecolor="white",
                       edgecolor="grey", zorder=2)
        ax.scatter([x[node]], [-d], s=90, color=colors[node], edgecolor="black", zorder=3)
    ax.set_yticks([-d for d in range(int(depth.max(initial=0)) + 1)])
    ax.set_yticklabels([f"depth {d}" for d in range(int(depth.max(initial=0)) + 1)], fontsize=7)
    ax.set_xticks([])
    ax.set_xlim(min(x.min(initial=0), root_x) - 0.7, max(x.max(initial=0), root_x) + 0.7)
    ax.set_ylim(-(depth.max(initial=0) + 0.6), 0.6)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title("tree", fontsize=9)
    ax.legend(handles=[
        Line2D([], [], marker="o", ls="", color="tab:blue", markeredgecolor="black", label="output region"),
        Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="grey",
               label="dummy / filtered node"),
    ], fontsize=6, loc="lower left", frameon=False)


def draw_hierarchy(
    image: Image.Image,
    masks: np.ndarray,
    depth: np.ndarray,
    parent: np.ndarray | None = None,
    max_levels: int = 4,
    title: str = "",
    caption: str = "",
    *,
    cell: tuple[float, float],
    left_out: int = 0,
) -> Figure:
    """The image, one panel per hierarchy depth with its output regions in colour,
    and (given ``parent``) the tree; a bounded number of regions (:mod:`claid.drawn_regions`),
    the title says how many are not drawn (with ``left_out``, those a caller left out).

    Args:
        image: the original image.
        masks: (R, h, w) bool patch-level region masks.
        depth: (R,) int depth of each region (1 = children of the root).
        parent: (R,) int index of each region's nearest output ancestor (-1: the root).
        max_levels: how many depth levels get a panel (deeper ones join the last).
        title: the image's name (first panel).
        caption: run name and dataset, the figure's title.
        cell: (cy, cx) original pixels per patch; masks reach pixels by
            ``claid.masks.patch_mask_to_pixels``, as in the store and the evaluation.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    # the patch cell in the pixels of this (possibly smaller-decoded) image
    full_height, full_width = original_size(image)
    cell = (cell[0] * rgb.shape[0] / full_height, cell[1] * rgb.shape[1] / full_width)
    depth = np.asarray(depth, dtype=np.int64)
    keep, kept_parent, dropped = drawn_regions(depth, depth if parent is None else parent,
                                               np.asarray(masks).sum(axis=(1, 2)))
    masks, depth, parent = masks[keep], depth[keep], None if parent is None else kept_parent
    title = f"{title or 'image'} ({left_out + dropped:,} regions not drawn)" if left_out + dropped else title
    levels = sorted(set(depth.tolist()))[:max_levels]
    n_panels = len(levels) + 1 + (parent is not None)
    fig = Figure(figsize=(3.2 * n_panels, 3.9))
    axes = np.atleast_1d(fig.subplots(1, n_panels))
    colors = [None] * len(depth)
    axes[0].imshow(rgb)
    axes[0].set_title(_wrap(title or "image", 34), fontsize=8)
    for ax, level in zip(axes[1 : len(levels) + 1], levels):
        overlay = rgb * 0.35
        chosen = np.flatnonzero(depth == level) if level != levels[-1] else np.flatnonzero(depth >= level)
        for k, r in enumerate(chosen):
            colors[r] = _COLORS[k % len(_COLORS)]
            m = patch_mask_to_pixels(masks[r], cell, rgb.shape[:2])
            overlay[m] = 0.45 * rgb[m] + 0.55 * np.array(colors[r])
        ax.imshow(np.clip(overlay, 0, 1))
        ax.set_title(f"depth {level}{'+' if level == levels[-1] else ''}: {len(chosen)} regions", fontsize=9)
    for ax in axes[: len(levels) + 1]:
        ax.axis("off")
    if parent is not None:
        if len(depth):
            _draw_tree(axes[-1], np.asarray(parent, dtype=np.int64), depth, colors)
        else:
            axes[-1].axis("off")
            axes[-1].set_title("no output region", fontsize=9)
    fig.suptitle(_wrap(f"region hierarchy · {caption}" if caption else "region hierarchy", 30 * n_panels),
                 fontsize=9)
    fig.tight_layout()
    return fig


def hierarchy_figure(
    image: Image.Image,
    masks: np.ndarray,
    depth: np.ndarray,
    path: str | Path,
    max_levels: int = 4,
    title: str = "",
    parent: np.ndarray | None = None,
    caption: str = "",
    *,
    cell: tuple[float, float],
    left_out: int = 0,
) -> Path:
    """:func:`draw_hierarchy` written to the PNG ``path``."""
    return save_figure(draw_hierarchy(image, masks, depth, parent, max_levels, title, caption, cell=cell,
                                      left_out=left_out), path)


def _show(ax, image: Image.Image, box, edge: str, box_color: str) -> None:
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
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=box_color, linewidth=2))


def draw_results_grid(
    queries: Sequence[Query],
    rankings: Sequence[Ranking],
    open_image: Callable[[str], Image.Image],
    ranks: Sequence[int] = (1, 2, 3, 5, 10),
    caption: str = "",
) -> Figure:
    """One row per query: the query (blue border, its box), then the images at the
    given 1-based ranks with the localising box; green border = relevant, red = not.
    Columns are headed by their rank; a legend says what the colours are."""
    by_qid: Mapping[str, Ranking] = {r.qid: r for r in rankings}
    rows = [q for q in queries if q.qid in by_qid and q.image is not None]
    if not rows:
        raise ValueError("no image query with a ranking to draw")
    fig = Figure(figsize=(2.4 * (len(ranks) + 1), 2.4 * len(rows) + 1.2))
    axes = np.atleast_2d(fig.subplots(len(rows), len(ranks) + 1))
    for r, (row, query) in enumerate(zip(axes, rows)):
        _show(row[0], open_image(query.image), query.box, edge="blue", box_color=QUERY_BOX)
        row[0].set_title(("query\n" if r == 0 else "") + _wrap(str(query.qid), 24), fontsize=8)
        ranking = by_qid[query.qid]
        positives = set(query.positives)
        for ax, rank in zip(row[1:], ranks):
            if rank > len(ranking.images):
                ax.axis("off")
                continue
            image_id = ranking.images[rank - 1]
            hit = image_id in positives
            _show(ax, open_image(image_id), ranking.boxes[rank - 1], edge="green" if hit else "red",
                  box_color=LOCAL_BOX)
            ax.set_title(("rank\n" if r == 0 else "") + f"#{rank}  score {ranking.scores[rank - 1]:.2f}", fontsize=8)
    fig.legend(handles=[
        Patch(facecolor="none", edgecolor=QUERY_BOX, lw=2, label="query box"),
        Patch(facecolor="none", edgecolor="green", lw=4, label="relevant"),
        Patch(facecolor="none", edgecolor="red", lw=4, label="not relevant"),
        Patch(facecolor="none", edgecolor=LOCAL_BOX, lw=2, label="localising box"),
    ], loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(_wrap(f"search results · {caption}" if caption else "search results", 30 * (len(ranks) + 1)),
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def results_grid_figure(
    queries: Sequence[Query],
    rankings: Sequence[Ranking],
    open_image: Callable[[str], Image.Image],
    path: str | Path,
    ranks: Sequence[int] = (1, 2, 3, 5, 10),
    caption: str = "",
) -> Path:
    """:func:`draw_results_grid` written to the PNG ``path``."""
    return save_figure(draw_results_grid(queries, rankings, open_image, ranks, caption), path, dpi=80)


def draw_recall(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = "") -> Figure:
    """Recall against IoU threshold, one line per named curve (thresholds, recalls)."""
    fig = Figure(figsize=(5.0, 3.8))
    ax = fig.subplots()
    for name, (thresholds, recalls) in curves.items():
        ax.plot(list(thresholds), list(recalls), marker="o", label=name)
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("recall")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(_wrap(title or "recall vs IoU", 60), fontsize=9)
    fig.tight_layout()
    return fig


def recall_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str = ""
) -> Path:
    """:func:`draw_recall` written to the PNG ``path``."""
    return save_figure(draw_recall(curves, title), path)


def _positions(values: Sequence) -> tuple[list[float], list[str] | None]:
    """x positions of swept values: the numbers themselves, or 0..n-1 with labels."""
    try:
        return [float(v) for v in values], None
    except (TypeError, ValueError):
        labels = list(dict.fromkeys(str(v) for v in values))
        return [float(labels.index(str(v))) for v in values], labels


def draw_sweep_metrics(
    values: Sequence,
    metrics: Mapping[str, Sequence[float | None]],
    baselines: Mapping[str, Sequence[float | None]],
    xlabel: str,
    title: str,
) -> Figure:
    """One panel per metric against the swept values; the first panel also draws
    each baseline (same length as ``values``) as a dashed line."""
    x, labels = _positions(values)
    fig = Figure(figsize=(4.6 * len(metrics), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for i, (ax, (name, ys)) in enumerate(zip(axes, metrics.items())):
        ax.plot(x, [np.nan if y is None else y for y in ys], marker="o", label=name)
        if i == 0:
            for base, bys in baselines.items():
                ax.plot(x, [np.nan if y is None else y for y in bys], ls="--", marker=".", label=base)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        if labels:
            ax.set_xticks(range(len(labels)), labels)
        elif len(set(x)) <= 12:  # the swept values themselves, not matplotlib's grid
            ax.set_xticks(sorted(set(x)), [f"{v:g}" for v in sorted(set(x))])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(_wrap(title, 50 * len(metrics)), fontsize=9)
    fig.tight_layout()
    return fig


def draw_sweep_heatmap(cells: Sequence[tuple], keys: Sequence[str], metric: str, title: str) -> Figure:
    """A heat map of ``metric`` over two swept keys; ``cells`` are (value of
    keys[0], value of keys[1], metric or None) triples; each cell is annotated."""
    rows = _ordered({str(c[0]): c[0] for c in cells})
    cols = _ordered({str(c[1]): c[1] for c in cells})
    grid = np.full((len(rows), len(cols)), np.nan)
    for a, b, value in cells:
        if value is not None:
            grid[rows.index(str(a)), cols.index(str(b))] = value
    fig = Figure(figsize=(1.2 * len(cols) + 3.2, 0.7 * len(rows) + 2.4))
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(keys[1])
    ax.set_ylabel(keys[0])
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=8, color="white")
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_title(_wrap(title, 50), fontsize=9)
    fig.tight_layout()
    return fig


def _ordered(values: Mapping[str, object]) -> list[str]:
    """Value labels sorted numerically when they all are numbers, else as text."""
    try:
        return sorted(values, key=lambda k: float(values[k]))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return sorted(values)


def run_figures(bench, store, rankings: Sequence[Ranking], run_dir: Path, report: dict, *,
                caption: str = "", n_images: int = 4, n_queries: int = 6) -> dict[str, str]:
    """The pictures of one run, in ``run_dir``: the hierarchy of the first
    ``n_images`` images with regions, a results grid of the first ``n_queries``
    image queries and the recall curve (when the report has one). A failing picture
    fails the run: best effort is not allowed to hide errors. ``caption`` (the run
    name and dataset) titles every picture.

    Returns:
        {artifact name: PNG path}.
    """
    from claid.images import load_image

    def open_image(image_id: str) -> Image.Image:  # a 12 MP photo is drawn from ~1000 px
        return load_image(bench.path(image_id), long_side_needed=lambda h, w: FIGURE_LONG_SIDE,
                          options=bench.decode)

    out: dict[str, str] = {}
    region_image = np.asarray(store.region_image())
    depth, parent, boxes = np.asarray(store.depth()), np.asarray(store.parent()), store.boxes()
    shown = 0
    for i, image_id in enumerate(store.image_ids):
        if shown >= n_images:
            break
        rows = np.flatnonzero(region_image == i)
        if len(rows) == 0:
            continue
        box = boxes[rows]  # only the drawn regions' masks are decoded
        keep, kept_parent, left_out = drawn_regions(depth[rows], parent[rows], (box[:, 2] - box[:, 0])
                                                    * (box[:, 3] - box[:, 1]))
        path = Path(run_dir) / f"hierarchy_{shown}.png"
        hierarchy_figure(open_image(image_id), store.masks(rows[keep]), depth[rows][keep], path,
                         title=image_id, parent=kept_parent, caption=caption, cell=store.cell(i),
                         left_out=left_out)
        out[f"hierarchy_{shown}"] = str(path)
        shown += 1
    image_queries = [q for q in bench.queries if q.image is not None][:n_queries]
    if rankings and image_queries:
        path = results_grid_figure(image_queries, rankings, open_image,
                                   Path(run_dir) / "results_grid.png", caption=caption)
        out["results_grid"] = str(path)
    if "recall_vs_iou" in report:
        curve = report["recall_vs_iou"]
        path = recall_figure({"CLAID": (curve["iou"], curve["recall"])},
                             Path(run_dir) / "recall_vs_iou.png", title=caption or bench.name)
        out["recall_vs_iou"] = str(path)
    return out
