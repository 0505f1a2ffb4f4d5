"""Finding a dataset's files on disk, and the errors raised when they are missing or wrong.

Every loader goes through these helpers so a missing benchmark always stops
with the same kind of message: what is missing, where to download it and the
folder layout the loader expects.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PIL import Image

#: Lower-case file extensions treated as images by :func:`list_images`.
#: A .gif is indexed by its first frame (what ``claid.images.load_image`` decodes).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".gif")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset (or one of its files) is not where the configuration says.

    The message names the missing path, where to get the data and the layout
    the loader expects under ``root``.
    """


class DatasetFormatError(ValueError):
    """A ground-truth file is malformed; the message names the file (and line)."""


def missing(
    name: str, path: str | os.PathLike, *, source: str, layout: str
) -> DatasetNotFoundError:
    """Build the error for a missing dataset file or folder.

    Args:
        name: benchmark name, e.g. "roxford5k".
        path: the path that does not exist.
        source: where to download the data (URL or instructions).
        layout: the expected folder layout under the dataset root, one entry a line.
    """
    return DatasetNotFoundError(
        f"{name}: {path} does not exist.\n"
        f"  Get the data from: {source}\n"
        f"  Expected layout under dataset.root:\n"
        + "\n".join("    " + line for line in layout.strip("\n").splitlines())
    )


def require(
    path: str | os.PathLike, *, name: str, source: str, layout: str, kind: str = "any"
) -> Path:
    """Return ``path`` as a Path if it exists, else raise :class:`DatasetNotFoundError`.

    Args:
        kind: "dir", "file" or "any": what ``path`` must be.
    """
    p = Path(path)
    ok = p.is_dir() if kind == "dir" else p.is_file() if kind == "file" else p.exists()
    if not ok:
        raise missing(name, p, source=source, layout=layout)
    return p


def list_images(root: str | os.PathLike) -> list[str]:
    """All image files under ``root``, searched recursively.

    Returns:
        Paths relative to ``root`` with "/" separators, sorted; a file counts as
        an image when its extension (case-insensitive) is in :data:`IMAGE_EXTENSIONS`.
        Hidden files and folders (name starting with ".") are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Sorting in place keeps the walk order stable; hidden folders hold caches, not data.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        for fname in filenames:
            if fname.startswith("."):
                continue
            if os.path.splitext(fname)[1].lower() in IMAGE_EXTENSIONS:
                found.append((rel_dir / fname).as_posix())
    return sorted(found)


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex md5 digest of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def split_unreadable(
    root: str | os.PathLike, image_ids: list[str]
) -> tuple[list[str], list[tuple[str, str]]]:
    """Open the header of every image; return (readable ids, [(id, reason), ...]).

    Used where a published dataset is known to ship broken files (Paris6k has
    20), so they are reported and skipped instead of failing a run halfway.
    """
    ok, bad = [], []
    for image_id in image_ids:
        try:
            with Image.open(Path(root) / image_id) as im:
                im.verify()
        except (OSError, SyntaxError, ValueError) as err:
            # PIL reports truncated / corrupt files with any of these.
            bad.append((image_id, f"{type(err).__name__}: {err}"))
        else:
            ok.append(image_id)
    return ok, bad


def index_by_stem(root: str | os.PathLike, folder: str) -> dict[str, str]:
    """Map file stem -> image id (relative to ``root``) of every image under
    ``root/folder``, searched recursively. Two images with one stem are an error."""
    out: dict[str, str] = {}
    for rel in list_images(Path(root) / folder):
        image_id = f"{folder}/{rel}" if folder else rel
        stem = Path(rel).stem
        if stem in out:
            raise DatasetFormatError(f"two images named {stem!r}: {out[stem]} and {image_id}")
        out[stem] = image_id
    return out
