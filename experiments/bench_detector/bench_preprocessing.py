"""How far claid's network inputs are from the authors' preprocessing.

    python experiments/bench_detector/bench_preprocessing.py [--images DIR]

For every photo of DIR (e.g. the authors' ``CALID/data/images`` of wlzhao22/CLAID;
default: a few scikit-image photos saved as JPEG, one of 3264 x 2448), the pixels an
extraction feeds the detector (DINO ViT-B/8) and the descriptor (ResNet-50), built from
the YAMLs, against the steps of the authors' ``detector.py`` / ``descriptor.py``
(``tests/reference/authors_preprocessing.py``), in 8-bit levels:

- ``detector``: claid's defaults (the descriptor needs the pixels too, so a photo is
  decoded at the larger of the two sizes);
- ``detector, tokens only``: when only the backbone needs the pixels (the descriptor's
  maps cached, or a ViT-token descriptor), a photo >= 2x the detector's size is decoded
  at that size (``images.reduced``);
- ``descriptor``: the input size, claid vs the authors (native; claid caps the long side
  at ``descriptor.max_long_side`` = 1024), and the difference where the sizes agree.
``images.reduced=false images.exif_transpose=false descriptor.max_long_side=null`` gives
the authors' pixels exactly (``tests/models/test_authors_preprocessing.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image

from claid.engine.datamodule import ImageListDataset

ROOT = Path(__file__).resolve().parents[2]


def _authors():
    path = ROOT / "tests" / "reference" / "authors_preprocessing.py"
    spec = importlib.util.spec_from_file_location("authors_preprocessing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _networks():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["backbone.pretrained=false", "descriptor.pretrained=false"])
    return instantiate(cfg.backbone), instantiate(cfg.descriptor)


def _sample_photos(folder: Path) -> list[Path]:
    from skimage import data

    out = []
    for name, size in [("astronaut", None), ("coffee", None), ("chelsea", None), ("astronaut", (3264, 2448))]:
        image = Image.fromarray(getattr(data, name)())
        if size:
            image = image.resize(size, Image.BICUBIC)
        path = folder / f"{name}_{image.width}x{image.height}.jpg"
        image.save(path, quality=92)
        out.append(path)
    return out


def _levels(mine: torch.Tensor, theirs: torch.Tensor, std) -> str:
    if mine.shape != theirs.shape:
        return f"size {tuple(mine.shape[1:])} vs {tuple(theirs.shape[1:])}"
    diff = (mine - theirs).abs() * torch.tensor(std).view(3, 1, 1) * 255
    return f"max {float(diff.max()):.1f}, mean {float(diff.mean()):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="folder of photos (default: scikit-image's)")
    args = parser.parse_args()
    authors = _authors()
    backbone, descriptor = _networks()
    tokens_only = SimpleNamespace(needs_image=False)
    with tempfile.TemporaryDirectory() as tmp:
        photos = sorted(p for p in args.images.iterdir() if p.is_file()) if args.images else _sample_photos(Path(tmp))
        print("| photo | size | detector | detector, tokens only | descriptor |")
        print("|---|---|---|---|---|")
        for path in photos:
            item = ImageListDataset([("x", str(path))], backbone=backbone, descriptor=descriptor)[0]
            lean = ImageListDataset([("x", str(path))], backbone=backbone, descriptor=tokens_only)[0]
            theirs, _ = authors.detector_pixels(str(path), patch_size=backbone.patch_size)
            height, width = item["image_size"]
            print(f"| {path.name} | {width}x{height} "
                  f"| {_levels(item['backbone_pixels'], theirs, authors.STD)} "
                  f"| {_levels(lean['backbone_pixels'], theirs, authors.STD)} "
                  f"| {_levels(item['descriptor_pixels'], authors.descriptor_pixels(str(path)), authors.STD)} |")


if __name__ == "__main__":
    main()
