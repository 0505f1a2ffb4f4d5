"""Where Oxford / Paris images and ground truth lie under ``dataset.root``.

The same files reach users under several folder names; every loader of Oxford5k,
Paris6k, ROxford5k and RParis6k accepts each of them (first match in this order):

================  =====================================  ========================================
who               images folder                          ground truth
================  =====================================  ========================================
claid             ``jpg/``                               ``gt_files/<q>_{good,ok,junk,query}.txt``
VGG archives      ``oxbuild_images/`` (oxbuild_images    ``gt_files_170407/`` (Oxford),
                  .tgz), ``paris/<landmark>/`` (paris_1  ``paris_120310/`` or ``gt_files_120310/``
                  .tgz + paris_2.tgz)                    (Paris), each holding the .txt files
revisitop,        ``jpg/``                               ``gnd_<name>.pkl`` (``gnd_oxford5k.pkl``,
cirtorch                                                 ``gnd_roxford5k.pkl``...)
lab copies        ``images/``                            ``gt/`` (.txt files or ``gnd_<name>.pkl``),
                                                         also ``lab/`` as some scripts name it
================  =====================================  ========================================

Any images folder pairs with any ground truth of its dataset (a renamed copy need
not match one row exactly). Images may sit in sub-folders. The classic datasets
read either the text files or cirtorch's classic pickle; the revisited ones read
only the pickle. A root that matches nothing stops with one message listing all of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from claid.datasets.files import DatasetNotFoundError

# images folders, per image collection, in search order, with who uses the name
_IMAGE_DIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "oxford": (
        ("jpg", "claid, revisitop, cirtorch"),
        ("oxbuild_images", "VGG archive oxbuild_images.tgz"),
        ("images", "lab copies"),
    ),
    "paris": (
        ("jpg", "claid, revisitop, cirtorch"),
        ("paris", "VGG archives paris_1.tgz + paris_2.tgz, paris/<landmark>/"),
        ("images", "lab copies"),
    ),
}
# folders holding the classic <q>_{good,ok,junk,query}.txt files
_TEXT_GT_DIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "oxford": (
        ("gt_files", "claid"),
        ("gt_files_170407", "VGG archive gt_files_170407.tgz"),
        ("gt", "lab copies"),
        ("lab", "lab copies"),
    ),
    "paris": (
        ("gt_files", "claid"),
        ("paris_120310", "VGG archive paris_120310.tgz"),
        ("gt_files_120310", "VGG archive paris_120310.tgz"),
        ("gt", "lab copies"),
        ("lab", "lab copies"),
    ),
}
# folders where a gnd_<name>.pkl may lie ("" = the root itself)
_PICKLE_DIRS: tuple[tuple[str, str], ...] = (("", "revisitop, cirtorch"), ("gt", "lab copies"))
_COLLECTION = {"oxford5k": "oxford", "roxford5k": "oxford", "paris6k": "paris", "rparis6k": "paris"}


@dataclass(frozen=True)
class OxfordParisLayout:
    """The folders one dataset root uses.

    Attributes:
        images: the images folder, relative to the root ("jpg", "oxbuild_images"...).
        ground_truth: the text ground-truth folder or the pickle, absolute.
        kind: "gt_files" (text files) or "pickle" (``gnd_<name>.pkl``).
    """

    images: str
    ground_truth: Path
    kind: str

    def describe(self, root: Path) -> str:
        """e.g. "jpg/ + gt_files/" (recorded with the benchmark's protocol)."""
        gt = self.ground_truth.relative_to(root).as_posix()
        return f"{self.images}/ + {gt}{'/' if self.kind == 'gt_files' else ''}"


def _has_query_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.name.endswith("_query.txt") for p in folder.iterdir())


def accepted_layouts(name: str, *, text: bool) -> str:
    """Every accepted images folder and ground truth of dataset ``name``, one a line."""
    collection = _COLLECTION[name]
    lines = ["images folder (one of; sub-folders allowed):"]
    lines += [f"  {d}/  ({who})" for d, who in _IMAGE_DIRS[collection]]
    lines.append("ground truth (one of):")
    if text:
        lines += [
            f"  {d}/<q>_{{good,ok,junk,query}}.txt  ({who})" for d, who in _TEXT_GT_DIRS[collection]
        ]
    lines += [
        f"  {(d + '/') if d else ''}gnd_{name}.pkl  ({who})" for d, who in _PICKLE_DIRS
    ]
    return "\n".join(lines)


def find_layout(root: str | os.PathLike, name: str, *, text: bool, source: str) -> OxfordParisLayout:
    """The first accepted layout found under ``root`` (order: module docstring).

    Args:
        root: the dataset root.
        name: "oxford5k", "paris6k", "roxford5k" or "rparis6k".
        text: whether the classic ``<q>_*.txt`` files are accepted (classic
            datasets); the pickle ``gnd_<name>.pkl`` always is.
        source: where to download the data, for the error message.
    Raises:
        DatasetNotFoundError: no images folder or no ground truth; the message
            lists every accepted layout.
    """
    if name not in _COLLECTION:
        raise ValueError(f"no Oxford/Paris layouts for {name!r}; expected one of {sorted(_COLLECTION)}")
    root = Path(root)
    collection = _COLLECTION[name]
    images = next((d for d, _ in _IMAGE_DIRS[collection] if (root / d).is_dir()), None)
    gt: tuple[Path, str] | None = None
    if text:
        found = next((root / d for d, _ in _TEXT_GT_DIRS[collection] if _has_query_files(root / d)), None)
        if found is not None:
            gt = (found, "gt_files")
    if gt is None:
        pickle = next(
            (root / d / f"gnd_{name}.pkl" for d, _ in _PICKLE_DIRS if (root / d / f"gnd_{name}.pkl").is_file()),
            None,
        )
        if pickle is not None:
            gt = (pickle, "pickle")
    if images is None or gt is None:
        what = "no images folder" if images is None else "no ground truth"
        if images is None and gt is None:
            what = "neither an images folder nor ground truth"
        raise DatasetNotFoundError(
            f"{name}: {what} under {root} in any accepted layout.\n"
            f"  Get the data from: {source}\n"
            f"  Accepted layouts under dataset.root:\n"
            + "\n".join("    " + line for line in accepted_layouts(name, text=text).splitlines())
        )
    return OxfordParisLayout(images=images, ground_truth=gt[0], kind=gt[1])
