"""How much the position-table rule moves regions: tokens and k-sums regions
of one seeded DINO backbone under the official rule (``pos_resample=dino``) and the
old one (``timm``), on the same photos.

    python experiments/bench_detector/bench_pos_rule.py [--images DIR] [--model vits16|vitb8]

DIR: a folder of photos (e.g. the authors' ``CALID/data/images`` of wlzhao22/CLAID);
default: scikit-image's photos. The weights are seeded random ones with a smooth
position table (low-frequency 2-D sinusoids, amplitude 0.5, as a trained table): the
size of the change with trained weights is not known from this.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from claid.backbones.timm_vit import TimmViTBackbone
from claid.cutters import cut_regions
from claid.cutters.planted import best_iou

MODELS = {"vits16": ("vit_small_patch16_224.dino", 16, 384), "vitb8": ("vit_base_patch8_224.dino", 8, 768)}


def smooth_table(side: int, dim: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    ys, xs = np.meshgrid(np.linspace(0, 1, side), np.linspace(0, 1, side), indexing="ij")
    fy, fx = rng.uniform(0.3, 2.0, (2, dim))
    phase = rng.uniform(0, 2 * np.pi, (2, dim))
    field = 0.5 * np.sin(2 * np.pi * fy * ys[..., None] + phase[0]) * np.cos(2 * np.pi * fx * xs[..., None] + phase[1])
    table = np.concatenate([rng.normal(0, 0.02, (1, dim)), field.reshape(side * side, dim)])[None]
    return torch.tensor(table, dtype=torch.float32)


def photos(folder: str | None) -> list[tuple[str, Image.Image]]:
    if folder:
        paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        return [(p.name, Image.open(p).convert("RGB")) for p in paths]
    from skimage import data

    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"]
    return [(n, Image.fromarray(getattr(data, n)()).convert("RGB")) for n in names]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", default=None)
    parser.add_argument("--model", default="vits16", choices=sorted(MODELS))
    args = parser.parse_args()
    name, patch, dim = MODELS[args.model]
    backbones = {}
    for rule in ("dino", "timm"):
        backbone = TimmViTBackbone(model_name=name, pretrained=False, seed=0, patch_size=patch,
                                   embed_dim=dim, pos_resample=rule)
        with torch.no_grad():
            backbone.model.pos_embed.copy_(smooth_table(224 // patch, dim, 0))
        backbones[rule] = backbone
    print(f"{'image':<28} {'grid':>7} {'min cos':>8} {'rel':>8} {'#new':>5} {'#old':>5} "
          f"{'same (IoU>=.9)':>14} {'mean IoU':>8}")
    totals = []
    for label, image in photos(args.images):
        pixels, _ = backbones["dino"].preprocess(image)
        grid = (pixels.shape[1] // patch, pixels.shape[2] // patch)
        with torch.no_grad():
            tokens = {rule: b(pixels[None])[0].double() for rule, b in backbones.items()}
        cos = torch.nn.functional.cosine_similarity(tokens["dino"], tokens["timm"], dim=-1).min().item()
        rel = ((tokens["dino"] - tokens["timm"]).abs().max() / tokens["timm"].abs().max()).item()
        trees = {rule: cut_regions(t.float().numpy(), grid, cutter="ksums") for rule, t in tokens.items()}
        ious = best_iou(trees["dino"].masks, trees["timm"].masks)
        same = float(np.mean(ious >= 0.9)) if len(ious) else 1.0
        totals.append((len(trees["dino"]), len(trees["timm"]), same, float(ious.mean()) if len(ious) else 1.0))
        print(f"{label[:28]:<28} {grid[0]:>3}x{grid[1]:<3} {cos:>8.4f} {rel:>8.4f} {len(trees['dino']):>5} "
              f"{len(trees['timm']):>5} {same:>14.2f} {totals[-1][3]:>8.3f}")
    new, old, same, mean = np.array(totals).mean(0)
    print(f"{'mean':<28} {'':>7} {'':>8} {'':>8} {new:>5.1f} {old:>5.1f} {same:>14.2f} {mean:>8.3f}")


if __name__ == "__main__":
    main()
