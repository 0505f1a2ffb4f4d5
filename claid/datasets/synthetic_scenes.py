"""Rendering the synthetic benchmark's images: pure functions on arrays.

A scene is a textured background with clutter patches, object instances pasted
at a random scale and rotation with a lighting change, and optional occluders
laid over part of an instance. An ``owner`` map (one int per pixel: the index
of the instance seen there, -1 for anything else) is kept alongside the image,
so the ground-truth box of every instance is the box of what is actually
visible, and its visible fraction is known exactly.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from claid.datasets.synthetic_assets import Asset, ellipse_alpha, rect_alpha

#: An opaque-enough pixel of a pasted matte (owns the pixel in the owner map).
OPAQUE = 0.5


def relight(rgb: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Random lighting change of an (H, W, 3) uint8 image: gain, bias, gamma and
    a colour tint, each scaled by ``strength`` (0 = unchanged). Returns uint8."""
    x = rgb.astype(np.float32) / 255.0
    gamma = float(np.exp(rng.uniform(-0.25, 0.25) * strength))
    gain = 1.0 + rng.uniform(-0.3, 0.3) * strength
    tint = 1.0 + rng.uniform(-0.1, 0.1, size=3).astype(np.float32) * strength
    bias = rng.uniform(-0.08, 0.08) * strength
    x = np.clip(x, 0, 1) ** gamma * gain * tint + bias
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def transform(
    rgb: np.ndarray, alpha: np.ndarray, *, long_side: int, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Scale a cut-out so its longer side is ``long_side`` pixels, then rotate it by
    ``angle`` degrees (counter-clockwise) on an expanded canvas.

    Returns:
        rgb: (h, w, 3) uint8; alpha: (h, w) float32 (0 on the corners the
        rotation uncovered).
    """
    h, w = alpha.shape
    s = long_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    rgba = np.dstack([rgb, (np.clip(alpha, 0, 1) * 255 + 0.5).astype(np.uint8)])
    im = Image.fromarray(rgba, mode="RGBA").resize(size, Image.BILINEAR)
    if angle:
        im = im.rotate(angle, resample=Image.BILINEAR, expand=True)
    out = np.asarray(im)
    return np.ascontiguousarray(out[:, :, :3]), out[:, :, 3].astype(np.float32) / 255.0


def paste(
    canvas: np.ndarray,
    owner: np.ndarray,
    rgb: np.ndarray,
    alpha: np.ndarray,
    x: int,
    y: int,
    label: int,
) -> None:
    """Alpha-blend a cut-out into ``canvas`` (H, W, 3) uint8 with its top-left at
    (x, y), in place; the parts outside the canvas are dropped. Pixels where the
    matte is opaque (> :data:`OPAQUE`) get ``label`` in the (H, W) int ``owner`` map."""
    H, W = owner.shape
    h, w = alpha.shape
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x2 <= x1 or y2 <= y1:
        return
    a = alpha[y1 - y : y2 - y, x1 - x : x2 - x]
    src = rgb[y1 - y : y2 - y, x1 - x : x2 - x].astype(np.float32)
    dst = canvas[y1:y2, x1:x2].astype(np.float32)
    canvas[y1:y2, x1:x2] = (a[:, :, None] * src + (1 - a[:, :, None]) * dst + 0.5).astype(np.uint8)
    owner[y1:y2, x1:x2][a > OPAQUE] = label


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight ``x1 y1 x2 y2`` box (exclusive end) of a 2-D bool mask, None if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(ys) == 0:
        return None
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def texture_background(
    rng: np.random.Generator, size: tuple[int, int], textures: tuple[np.ndarray, ...]
) -> np.ndarray:
    """(H, W, 3) uint8 background: two tinted texture crops blended across a
    random soft boundary, so no two scenes share a backdrop."""
    H, W = size
    layers = []
    for _ in range(2):
        tex = textures[int(rng.integers(len(textures)))]
        zoom = rng.uniform(0.6, 1.4)
        ch, cw = min(tex.shape[0], int(H / zoom) + 1), min(tex.shape[1], int(W / zoom) + 1)
        y0 = int(rng.integers(0, tex.shape[0] - ch + 1))
        x0 = int(rng.integers(0, tex.shape[1] - cw + 1))
        crop = Image.fromarray(tex[y0 : y0 + ch, x0 : x0 + cw]).resize((W, H), Image.BILINEAR)
        grey = np.asarray(crop, dtype=np.float32)[:, :, None] / 255.0
        colour = rng.uniform(0.35, 1.0, size=3).astype(np.float32)
        layers.append(grey * colour)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    d = (xx - rng.uniform(0, W)) * np.cos(theta) + (yy - rng.uniform(0, H)) * np.sin(theta)
    t = np.clip(d / (0.1 * max(H, W)) + 0.5, 0, 1)[:, :, None]
    out = layers[0] * t + layers[1] * (1 - t)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def clutter_patch(
    rng: np.random.Generator, sources: tuple[Asset, ...], long_side: int
) -> tuple[np.ndarray, np.ndarray]:
    """A random crop of a random clutter photo, scaled, rotated and relit, with a
    rectangular or elliptical matte. Returns (rgb uint8, alpha float32)."""
    src = sources[int(rng.integers(len(sources)))]
    sh, sw = src.rgb.shape[:2]
    ch = int(rng.integers(max(8, sh // 4), sh + 1))
    cw = int(rng.integers(max(8, sw // 4), sw + 1))
    y0, x0 = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    rgb = relight(src.rgb[y0 : y0 + ch, x0 : x0 + cw], rng)
    alpha = ellipse_alpha(ch, cw) if rng.random() < 0.5 else rect_alpha(ch, cw)
    return transform(rgb, alpha, long_side=long_side, angle=float(rng.uniform(-45, 45)))


def _visible_fractions(owner: np.ndarray, full: list[int]) -> list[float]:
    counts = np.bincount(owner.ravel() + 1, minlength=len(full) + 1)[1:]
    return [float(c) / max(f, 1) for c, f in zip(counts, full)]


def render_instance_scene(
    rng: np.random.Generator,
    size: tuple[int, int],
    instances: list[Asset],
    *,
    clutter: tuple[Asset, ...],
    textures: tuple[np.ndarray, ...],
    adjacent: bool = False,
    scale_range: tuple[float, float] = (0.35, 0.7),
    max_rotation: float = 30.0,
    n_clutter: tuple[int, int] = (3, 7),
    occlusion_prob: float = 0.35,
    min_visible: float = 0.6,
    tries: int = 100,
) -> tuple[np.ndarray, list[tuple[int, int, int, int]], list[float]]:
    """Render one cluttered scene holding ``instances``.

    Args:
        rng: the scene's random generator (the scene is a function of it).
        size: (H, W) of the image in pixels.
        instances: the cut-outs to place, at least one.
        adjacent: place every instance next to the previous one (multi-instance
            queries: one box then covers them all tightly).
        scale_range: longer side of an instance as a fraction of min(H, W) (for
            n > 1 instances, times 1.15 / sqrt(n)).
        max_rotation: rotations are uniform in +-max_rotation degrees.
        n_clutter: range (inclusive) of clutter patches under the instances.
        occlusion_prob: chance that a clutter patch is laid over part of each instance.
        min_visible: every instance keeps at least this fraction of its pixels visible.

    Returns:
        image: (H, W, 3) uint8.
        boxes: per instance, the ``x1 y1 x2 y2`` box (exclusive end) of its visible pixels.
        visible: per instance, the visible fraction of its pixels.
    """
    H, W = size
    if not instances:
        raise ValueError("a scene needs at least one instance")
    canvas = texture_background(rng, size, textures)
    owner = np.full((H, W), -1, dtype=np.int32)
    for _ in range(int(rng.integers(n_clutter[0], n_clutter[1] + 1))):
        rgb, alpha = clutter_patch(rng, clutter, int(rng.uniform(0.15, 0.45) * min(H, W)))
        paste(
            canvas,
            owner,
            rgb,
            alpha,
            int(rng.integers(-20, W - 20)),
            int(rng.integers(-20, H - 20)),
            -1,
        )

    full: list[int] = []
    placed: list[tuple[int, int, int, int]] = []
    # Several instances share the frame: shrink them so they fit side by side.
    crowd = min(1.0, 1.15 / np.sqrt(len(instances)))
    for k, asset in enumerate(instances):
        shrink = crowd
        for attempt in range(tries):
            if attempt and attempt % 20 == 0:
                shrink *= 0.8  # crowded scene: try smaller
            long_side = int(rng.uniform(*scale_range) * min(H, W) * shrink)
            rgb, alpha = transform(
                relight(asset.rgb, rng),
                asset.alpha,
                long_side=max(long_side, 16),
                angle=float(rng.uniform(-max_rotation, max_rotation)),
            )
            h, w = alpha.shape
            if h >= H or w >= W:
                continue
            if adjacent and placed:
                px1, py1, px2, py2 = placed[-1]
                cx = (px1 + px2) / 2 + np.cos(phi := rng.uniform(0, 2 * np.pi)) * (
                    (px2 - px1) / 2 + w / 2
                ) * rng.uniform(0.85, 1.1)
                cy = (py1 + py2) / 2 + np.sin(phi) * ((py2 - py1) / 2 + h / 2) * rng.uniform(
                    0.85, 1.1
                )
                x, y = int(cx - w / 2), int(cy - h / 2)
                if x < 0 or y < 0 or x + w > W or y + h > H:
                    continue
            else:
                x, y = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
            trial = owner.copy()
            trial_canvas_mask = alpha > OPAQUE
            trial[y : y + h, x : x + w][trial_canvas_mask] = k
            fractions = _visible_fractions(trial, full + [int(trial_canvas_mask.sum())])
            if min(fractions) >= min_visible and (
                adjacent or not _overlaps(placed, (x, y, x + w, y + h))
            ):
                break
        else:
            raise RuntimeError(
                f"could not place instance {asset.name!r} in a {W}x{H} scene after {tries} tries;"
                " use a larger image_size or fewer instances per scene"
            )
        paste(canvas, owner, rgb, alpha, x, y, k)
        full.append(int((alpha > OPAQUE).sum()))
        placed.append((x, y, x + w, y + h))

    for k in range(len(instances)):
        if rng.random() >= occlusion_prob:
            continue
        x1, y1, x2, y2 = mask_box(owner == k) or placed[k]
        for _ in range(8):
            side = int(rng.uniform(0.3, 0.6) * max(x2 - x1, y2 - y1))
            rgb, alpha = clutter_patch(rng, clutter, max(side, 8))
            h, w = alpha.shape
            # Centre the occluder on a random point of the instance's box edge.
            if rng.random() < 0.5:
                cx, cy = rng.uniform(x1, x2), float(rng.choice([y1, y2]))
            else:
                cx, cy = float(rng.choice([x1, x2])), rng.uniform(y1, y2)
            ox, oy = int(cx - w / 2), int(cy - h / 2)
            trial = owner.copy()
            paste(np.zeros((H, W, 3), np.uint8), trial, rgb, alpha, ox, oy, -1)
            if min(_visible_fractions(trial, full)) >= min_visible:
                paste(canvas, owner, rgb, alpha, ox, oy, -1)
                break

    canvas = relight(canvas, rng, strength=0.5)
    boxes, visible = [], _visible_fractions(owner, full)
    for k in range(len(instances)):
        box = mask_box(owner == k)
        if box is None:  # cannot happen while min_visible > 0; guard the invariant anyway
            raise RuntimeError(f"instance {instances[k].name!r} ended up invisible")
        boxes.append(box)
    return canvas, boxes, visible


def _overlaps(placed: list[tuple[int, int, int, int]], box: tuple[int, int, int, int]) -> bool:
    """True when ``box`` covers more than 10% of itself or of any placed box."""
    x1, y1, x2, y2 = box
    area = (x2 - x1) * (y2 - y1)
    for px1, py1, px2, py2 in placed:
        iw = min(x2, px2) - max(x1, px1)
        ih = min(y2, py2) - max(y1, py1)
        if iw > 0 and ih > 0:
            inter = iw * ih
            if inter > 0.1 * min(area, (px2 - px1) * (py2 - py1)):
                return True
    return False


def render_place(
    rng: np.random.Generator,
    size: tuple[int, int],
    *,
    clutter: tuple[Asset, ...],
    textures: tuple[np.ndarray, ...],
    margin: float = 1.3,
) -> np.ndarray:
    """A "place" for the image-retrieval split: a background with dense clutter,
    ``margin`` times larger than ``size`` so near-duplicate views can be cut from it.
    Returns (round(H*margin), round(W*margin), 3) uint8."""
    H, W = round(size[0] * margin), round(size[1] * margin)
    canvas = texture_background(rng, (H, W), textures)
    owner = np.full((H, W), -1, dtype=np.int32)
    for _ in range(int(rng.integers(6, 11))):
        rgb, alpha = clutter_patch(rng, clutter, int(rng.uniform(0.2, 0.55) * min(H, W)))
        paste(
            canvas,
            owner,
            rgb,
            alpha,
            int(rng.integers(-30, W - 30)),
            int(rng.integers(-30, H - 30)),
            -1,
        )
    return canvas


def view_of_place(
    rng: np.random.Generator,
    place: np.ndarray,
    size: tuple[int, int],
    *,
    clutter: tuple[Asset, ...],
    max_rotation: float = 8.0,
    occlusion_prob: float = 0.3,
) -> np.ndarray:
    """A near-duplicate view of a place: random zoom (70-88% of the place), shift and
    small rotation, resized to ``size`` (H, W), relit, sometimes partly occluded."""
    H, W = size
    PH, PW = place.shape[:2]
    zoom = rng.uniform(0.7, 0.88)
    ch, cw = int(PH * zoom), int(PW * zoom)
    angle = float(rng.uniform(-max_rotation, max_rotation))
    # Half extent of the rotated crop: keeping it inside the place avoids empty corners.
    c, s = abs(np.cos(np.radians(angle))), abs(np.sin(np.radians(angle)))
    hx, hy = (cw * c + ch * s) / 2, (cw * s + ch * c) / 2
    if hx > PW / 2 or hy > PH / 2:
        angle, hx, hy = 0.0, cw / 2, ch / 2
    cy, cx = rng.uniform(hy, PH - hy), rng.uniform(hx, PW - hx)
    im = Image.fromarray(place).rotate(angle, resample=Image.BILINEAR, center=(cx, cy))
    box = (int(cx - cw / 2), int(cy - ch / 2), int(cx - cw / 2) + cw, int(cy - ch / 2) + ch)
    view = np.array(im.crop(box).resize((W, H), Image.BILINEAR))
    if rng.random() < occlusion_prob:
        rgb, alpha = clutter_patch(rng, clutter, int(rng.uniform(0.2, 0.35) * min(H, W)))
        paste(
            view,
            np.full((H, W), -1, np.int32),
            rgb,
            alpha,
            int(rng.integers(0, W - alpha.shape[1] // 2)),
            int(rng.integers(0, H - alpha.shape[0] // 2)),
            -1,
        )
    return relight(view, rng, strength=0.7)
