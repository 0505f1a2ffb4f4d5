"""The pictures of the docs and the README, drawn by claid's own figures code.

    python docs/hooks/make_figures.py      # from the repository root; writes docs/assets/*.png

The backbone is DINO ViT-S/16 with *seeded random weights* (no weights are downloaded),
so the regions show how the cutter and its settings behave, not what a trained network
finds. The photos are scikit-image's sample images (public domain, shipped with it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "assets"
PHOTOS = {"astronaut": data.astronaut, "chelsea": data.chelsea, "coffee": data.coffee}
# one picture per setting the concepts page explains; the rest stay at CutSettings' defaults
VARIANTS = {
    "hierarchy": dict(alpha=0.7),
    "alpha_0.2": dict(alpha=0.2),
    "tau1_0.5": dict(alpha=0.7, tau1=0.5),
    "tau2_0.5": dict(alpha=0.7, tau2=0.5),
    "dummies_kept": dict(alpha=0.7, filter_dummies=False),
}


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from claid.cutters.hierarchy import cut_regions
    from claid.figures import hierarchy_figure

    cfg = OmegaConf.load(ROOT / "conf" / "backbone" / "dino_vits16.yaml")
    cfg.pretrained = False
    backbone = instantiate(cfg).eval()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, load in PHOTOS.items():
        image = Image.fromarray(load()).convert("RGB")
        grid = backbone.extract_patches(image)
        cell = (grid.patch_size * grid.scale[0], grid.patch_size * grid.scale[1])
        for variant, settings in VARIANTS.items():
            if name != "chelsea" and variant != "hierarchy":
                continue
            tree = cut_regions(grid.tokens, grid.grid, **settings)
            shown = ", ".join(f"{k}={v}" for k, v in settings.items())
            path = OUT / f"{variant}_{name}.png"
            hierarchy_figure(image, tree.masks, tree.depth, path, title=f"{name} (scikit-image)",
                             parent=tree.parent, cell=cell,
                             caption=f"DINO ViT-S/16, random weights · k-sums {shown}")
            # a 256-colour palette keeps the pictures readable at a third of the bytes
            Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
            print(f"{path.relative_to(ROOT)}: {len(tree.depth)} regions, depths {sorted(set(tree.depth.tolist()))}")


if __name__ == "__main__":
    main()
