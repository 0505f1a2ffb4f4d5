"""Database images, their region hierarchies and uploads, for ``claid serve``.

An image is named by the store's integer image index or by its dataset-relative id
(percent-encoded in URLs: ids contain ``/``); either resolves only through the index
dir's own image table, so no client string ever becomes a filesystem path. The file
is then ``<collection root>/<id>`` and is served only when its real path lies inside
the collection root's real path: a collection folder that is itself a symlink (a
dataset on a mounted disk) is served, a file inside it that links outside is refused.

Uploads have the server's own byte and pixel limits, both checked before the image
is decoded (the pixel count comes from the header); the decode is
:func:`claid.images.load_image`, the CLI's (EXIF rotation applied).
"""

from __future__ import annotations

import io
import mimetypes
import os
import tempfile
import warnings
from pathlib import Path
from urllib.parse import unquote

import numpy as np
from PIL import Image

from claid.datasets.tar_shards import split_member_path
from claid.serve.engine import ApiError, SearchEngine

MAX_UPLOAD_BYTES = 20 * 2**20
MAX_UPLOAD_PIXELS = 40_000_000
MAX_THUMB = 2048


def image_number(engine: SearchEngine, ref: str) -> int:
    """A URL's image reference (integer index or percent-encoded id) -> image index."""
    text = unquote(ref)
    # ASCII digits only: str.isdigit() also accepts '²' or '١٢', which int() refuses or reads
    if text.isascii() and text.isdigit() and text not in engine.image_number:
        number = int(text) if len(text) <= 18 else len(engine.image_ids)  # int(): <= 4300 digits
        if number < len(engine.image_ids):
            return number
    elif text in engine.image_number:
        return engine.image_number[text]
    raise ApiError(404, f"unknown image {text[:200]!r}: not an image of this index "
                        f"(ids are its {len(engine.image_ids)} dataset-relative paths, or 0.."
                        f"{len(engine.image_ids) - 1})")


def image_path(engine: SearchEngine, root: str | Path | None, number: int) -> str:
    """The file of database image ``number``, refused when it resolves outside ``root``."""
    if root is None:
        raise ApiError(404, "this server has no collection root: start claid serve with --run-dir "
                            "or --images ROOT to see images")
    return file_under_root(root, engine.image_ids[number])


def file_under_root(root: str | Path, relative: str, what: str = "image") -> str:
    """``<root>/<relative>`` (a name read from the index's table or a run's records, never
    from a request), refused when its real path lies outside the root's real path."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, relative))
    if os.path.isabs(relative) or os.path.commonpath([real_root, real]) != real_root:
        raise ApiError(403, f"{what} {relative!r} resolves outside the collection root; refused")
    if not os.path.isfile(real) and split_member_path(real) is None:  # a file, or a member of a tar shard
        raise ApiError(404, f"{what} {relative!r}: file missing under the collection root")
    return real


def sized_image(path: str, size: int | None):
    """The file itself (``size`` None) or its JPEG thumbnail with an ``X-Image-Size`` header."""
    from fastapi.responses import FileResponse, Response

    from claid.images import ImageError, displayed_size

    if size is None:
        if split_member_path(path) is not None:  # an image inside a tar shard, read by its offset
            return Response(_member_bytes(path), media_type=mimetypes.guess_type(path)[0] or "image/jpeg")
        return FileResponse(path)
    if not 1 <= size <= MAX_THUMB:
        raise ApiError(400, f"size must be in [1, {MAX_THUMB}], got {size}")
    try:
        height, width = displayed_size(path)
    except ImageError as err:
        raise ApiError(422, f"cannot read the image header: {err.reason}") from None
    return Response(thumbnail(path, size), media_type="image/jpeg", headers={"X-Image-Size": f"{width}x{height}"})


def _member_bytes(path: str) -> bytes:
    """The bytes of a tar-shard member (the shard's index checked against its size and mtime)."""
    from claid.datasets.tar_shards import read_member

    try:
        data = read_member(path)
    except (OSError, ValueError) as err:
        raise ApiError(404, f"cannot read {Path(path).name!r} from its shard: {err}") from None
    if data is None:
        raise ApiError(404, f"{Path(path).name!r}: not a member of its shard")
    return data


def thumbnail(path: str, size: int) -> bytes:
    """JPEG of the image (EXIF rotation applied), long side at most ``size``."""
    from claid.images import ImageError, load_image

    try:
        image = load_image(path, long_side_needed=lambda h, w: min(size, max(h, w)))
    except ImageError as err:
        raise ApiError(422, f"cannot decode the image: {err.reason}") from None
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=88)
    return out.getvalue()


def image_size(engine: SearchEngine, root, number: int) -> tuple[int, int]:
    """(height, width) as displayed: the store's record, else the file header's."""
    if engine.store is not None:
        height, width = engine.store.image_sizes()[number]
        return int(height), int(width)
    from claid.images import ImageError, displayed_size

    try:
        return displayed_size(image_path(engine, root, number))
    except ImageError as err:
        raise ApiError(422, f"cannot read the image header: {err.reason}") from None


def _rle(mask: np.ndarray) -> list[int]:
    """Row-major run lengths of a bool mask, starting with a run of False (may be 0)."""
    flat = np.asarray(mask, bool).reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


def regions_payload(engine: SearchEngine, number: int) -> dict:
    """The hierarchy of image ``number``: every stored region with its global region
    id, box, depth, parent and patch-level mask (run lengths on ``grid``; ``cell`` is
    the original pixels per patch). The store keeps output regions only: dummy nodes
    are decomposed but never stored, so no region carries a dummy flag."""
    if engine.store is None:
        raise ApiError(404, "this server has no region store: start claid serve with --run-dir "
                            "or --store to see hierarchies")
    store = engine.store
    image_id = engine.image_ids[number]
    regions = store.regions_of(image_id)
    first = int(engine.first_region[number])
    grid = None if regions.masks is None else list(regions.masks.shape[1:])
    try:
        cell = list(store.cell(number))
    except ValueError:
        cell = None
    out = []
    for r in range(len(regions)):
        parent = int(regions.parent[r])
        out.append({
            "region_id": first + r, "box": [float(v) for v in regions.boxes[r]],
            "depth": int(regions.depth[r]), "parent": None if parent < 0 else first + parent,
            "mask": None if regions.masks is None else _rle(regions.masks[r]),
        })
    height, width = regions.image_size
    return {"image_id": image_id, "image_index": number, "height": height, "width": width,
            "grid": grid, "cell": cell, "dummy_recorded": False, "regions": out}


def decode_upload(data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES,
                  max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """Uploaded bytes -> RGB image, as ``load_image`` decodes a file; 413 past a limit
    (bytes, or pixels read from the header before decoding), 400 for a non-image."""
    from claid.images import ImageError, load_image

    if len(data) > max_bytes:
        raise ApiError(413, f"upload of {len(data)} bytes is over this server's limit of {max_bytes}")
    if not data:
        raise ApiError(400, "the upload is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as opened:
                width, height = opened.size
    except Image.DecompressionBombError:
        raise ApiError(413, f"the upload has more pixels than this server's limit of {max_pixels}") from None
    except Exception:  # noqa: BLE001 - PIL raises many kinds for a non-image header
        raise ApiError(400, "the upload is not an image (unrecognised format)") from None
    if width * height > max_pixels:
        raise ApiError(413, f"the upload is {width}x{height} = {width * height} pixels, over this "
                            f"server's limit of {max_pixels}")
    with tempfile.NamedTemporaryFile(suffix=".upload") as handle:
        handle.write(data)
        handle.flush()
        try:
            return load_image(handle.name)
        except ImageError as err:
            raise ApiError(400, f"cannot decode the upload: {err.reason}") from None
