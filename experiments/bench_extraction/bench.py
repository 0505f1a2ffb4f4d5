"""Extraction throughput: images/s and where the time goes.

Runs ``claid.engine.extract_regions`` (the real stage: decoding, both networks,
the k-sums cutter, pooling, store writing) on photos from scikit-image resized to
a 360-px short side, with the detector / cutter / descriptor chosen from ``conf/``
and *random* weights (same compute as the published ones). Prints a JSON record
and a table; see README.md for the command and the numbers measured.

Usage:
    .venv/bin/python experiments/bench_extraction/bench.py --images 24 \
        --backbone dino_vits16 --descriptor resnet50 --cutter ksums
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from skimage import data as skdata

from claid.engine import extract_regions

# Colour photos bundled with scikit-image (no download needed).
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry",
          "hubble_deep_field"]
FORWARDS = ("backbone_forward", "descriptor_forward")


def write_images(folder: Path, count: int, short_side: int) -> list[tuple[str, str]]:
    """``count`` JPEGs with a ``short_side``-px short side, landscape and portrait,
    aspect 4:3 or 3:2, cut from the bundled photos."""
    images = []
    for k in range(count):
        photo = Image.fromarray(getattr(skdata, PHOTOS[k % len(PHOTOS)])())
        long_side = int(short_side * (4 / 3 if k % 2 == 0 else 3 / 2))
        size = (long_side, short_side) if (k // 2) % 2 == 0 else (short_side, long_side)
        path = folder / f"img{k:04d}.jpg"
        photo.resize(size, Image.BILINEAR).save(path, quality=90)
        images.append((path.name, str(path)))
    return images


def build(conf_dir: Path, group: str, name: str):
    """Instantiate ``conf/<group>/<name>.yaml`` with random weights."""
    path = conf_dir / group / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no config {path}; available: "
                                f"{sorted(p.stem for p in (conf_dir / group).glob('*.yaml'))}")
    cfg = OmegaConf.load(path)
    # Random weights: the benchmark measures compute, and no weights can be fetched here.
    if "pretrained" in cfg:
        cfg.pretrained = False
    if "checkpoint" in cfg:
        cfg.checkpoint = None
    component = instantiate(cfg)
    return component.eval() if isinstance(component, torch.nn.Module) else component


def split(summary: dict, wall: float, project_regions: float) -> dict:
    """Seconds and shares of the predict loop spent in each forward and elsewhere.

    Random weights yield fewer regions than trained ones, and pooling scales with
    the region count, so the share is also *projected* to ``project_regions``
    regions per image from the measured pooling cost per region (labelled as such).
    """
    timings = summary["timings_rank0_seconds"]
    loop = timings["predict_loop"]
    forwards = {name: timings.get(name, 0.0) for name in FORWARDS}
    other = loop - sum(forwards.values())
    pool_per_region = timings.get("pool", 0.0) / max(summary["regions"], 1)
    projected_other = other - timings.get("pool", 0.0) + (
        pool_per_region * project_regions * summary["images"])
    return {
        "predict_loop_s": round(loop, 3),
        "wall_with_setup_s": round(wall, 3),
        **{f"{k}_s": round(v, 3) for k, v in forwards.items()},
        "everything_else_s": round(other, 3),
        **{f"{k}_share": round(v / loop, 3) for k, v in forwards.items()},
        "everything_else_share": round(other / loop, 3),
        "pool_ms_per_region": round(1000 * pool_per_region, 2),
        "projected_regions_per_image": project_regions,
        "projected_everything_else_share": round(
            projected_other / (projected_other + sum(forwards.values())), 3),
        "measured_parts_of_everything_else_s": {
            k: v for k, v in timings.items() if k not in FORWARDS and k != "predict_loop"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--short-side", type=int, default=360)
    parser.add_argument("--backbone", default="dino_vits16")
    parser.add_argument("--descriptor", default="resnet50")
    parser.add_argument("--cutter", default="ksums")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--cut-workers", type=int, default=None)
    parser.add_argument("--cut-pool", default="thread", choices=("thread", "process"))
    parser.add_argument("--profile", action="store_true",
                        help="synchronise the device around each forward (honest split on a GPU)")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--conf-dir", type=Path,
                        default=Path(__file__).resolve().parents[2] / "conf")
    parser.add_argument("--project-regions", type=float, default=30.0,
                        help="regions/image for the projected share (trained DINO: ~30)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    backbone = build(args.conf_dir, "backbone", args.backbone)
    cutter = build(args.conf_dir, "cutter", args.cutter)
    descriptor = build(args.conf_dir, "descriptor", args.descriptor)
    options = dict(backbone=backbone, cutter=cutter, descriptor=descriptor,
                   accelerator=args.accelerator, batch_size=args.batch_size,
                   num_workers=args.num_workers, precision=args.precision,
                   cut_workers=args.cut_workers, cut_pool=args.cut_pool, profile=args.profile)
    config = {"bench": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        images = write_images(folder, args.images + 2, args.short_side)
        # Warm-up on two images outside the timing: numba compiles the cutter on its
        # first call, and the first forwards allocate; neither recurs at scale.
        extract_regions(images[:2], store_dir=os.path.join(tmp, "warmup"), config=config,
                        progress=False, **options)
        started = time.perf_counter()
        store = extract_regions(images[2:], store_dir=os.path.join(tmp, "store"),
                                config=config, progress=True, **options)
        wall = time.perf_counter() - started
        summary = store.summary

    loop = summary["timings_rank0_seconds"]["predict_loop"]
    record = {
        "backbone": args.backbone, "descriptor": args.descriptor, "cutter": args.cutter,
        "images": summary["images"], "skipped": summary["skipped"],
        "regions": summary["regions"], "regions_per_image": round(summary["regions_per_image"], 2),
        "short_side": args.short_side, "batch_size": args.batch_size,
        "num_workers": args.num_workers, "accelerator": args.accelerator,
        "images_per_second": round(summary["images"] / loop, 3),
        **split(summary, wall, args.project_regions),
        # with --profile on a GPU: the share of the loop the device spent in the forwards
        "device_busy_share": round(
            sum(summary["timings_rank0_seconds"].get(k, 0.0) for k in FORWARDS) / loop, 3),
        "gpu_peak_memory_gib": (round(torch.cuda.max_memory_allocated() / 2**30, 2)
                                if torch.cuda.is_available() else None),
        "cut_workers": summary.get("cut_workers"), "cut_pool": args.cut_pool,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
    }
    text = json.dumps(record, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(f"\n{record['images']} images, {record['regions']} regions: "
          f"{record['images_per_second']:.2f} images/s on {args.accelerator}")
    print(f"  {args.backbone} forward   {record['backbone_forward_s']:8.2f} s "
          f"{100 * record['backbone_forward_share']:5.1f} %")
    print(f"  {args.descriptor} forward   {record['descriptor_forward_s']:8.2f} s "
          f"{100 * record['descriptor_forward_share']:5.1f} %")
    print(f"  everything else    {record['everything_else_s']:8.2f} s "
          f"{100 * record['everything_else_share']:5.1f} %  (target <= 35 %)")
    print(f"  projected at {args.project_regions:g} regions/image "
          f"({record['pool_ms_per_region']:.1f} ms pooling per region): everything else "
          f"{100 * record['projected_everything_else_share']:5.1f} %")


if __name__ == "__main__":
    main()
