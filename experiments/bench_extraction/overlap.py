"""Can the extraction keep a fast accelerator fed? A stand-in accelerator on the CPU.

The stand-in replaces each network's forward by a wait of a set time per batch
(``time.sleep``: no CPU used, like a kernel running on a device) that returns the
real network's output for those images, recorded beforehand. Everything else is
the real stage (``claid.engine.extract_regions``): decoding, the k-sums cutter on
real tokens, pooling on real feature maps, store writing. With a cut pool of N
workers the wall time of the predict loop should approach
``max(forward time, cut time / N)`` instead of ``forward time + cut time``; the
device-busy fraction is forward time / wall time.

Usage (see README.md for the numbers):
    .venv/bin/python experiments/bench_extraction/overlap.py --images 16 \
        --forward-ms 50 --cut-workers 1 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from bench import build, write_images
from hydra.utils import instantiate
from omegaconf import OmegaConf  # this folder (the script's own directory)

from claid.engine import FeatureCache, extract_regions
from claid.store import RegionStore


class StandInForward:
    """Replaces ``module.forward`` by: wait ``seconds`` per call, return the recorded
    output of the real forward for each image in the batch.

    While ``recording`` is True, the real forward runs image by image and its outputs
    are kept, keyed by a hash of the image's input pixels; afterwards every call
    only sleeps and stacks recorded outputs. ``waited`` sums the seconds slept.
    """

    def __init__(self, module: torch.nn.Module, seconds: float) -> None:
        self.real_forward = module.forward
        self.seconds = seconds
        self.recording = True
        self.outputs: dict[bytes, torch.Tensor] = {}
        self.waited = 0.0
        self.calls = 0
        module.forward = self  # the instance attribute wins over the class's forward

    @staticmethod
    def _key(pixels: torch.Tensor) -> bytes:
        # every 5th pixel: tells the benchmark's images apart at a fiftieth of the cost
        array = pixels.detach()[:, ::5, ::5].cpu().contiguous().numpy()
        return hashlib.blake2b(array.tobytes(), digest_size=16).digest() + bytes(
            str(tuple(pixels.shape)), "ascii")

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        keys = [self._key(p) for p in pixels]
        if self.recording:
            for key, one in zip(keys, pixels):
                if key not in self.outputs:
                    self.outputs[key] = self.real_forward(one[None])[0].detach().clone()
            return torch.stack([self.outputs[k] for k in keys])
        missing = [k for k in keys if k not in self.outputs]
        if missing:
            raise RuntimeError(f"stand-in forward: {len(missing)} images were not recorded")
        time.sleep(self.seconds)
        self.waited += self.seconds
        self.calls += 1
        return torch.stack([self.outputs[k] for k in keys])


def build_descriptor(conf_dir: Path, name: str, backbone):
    """``conf/descriptor/<name>.yaml`` with random weights; a token descriptor
    (``backbone: ${backbone}``) shares the detector, as in the pipeline."""
    cfg = OmegaConf.load(conf_dir / "descriptor" / f"{name}.yaml")
    if "backbone" not in cfg:
        return build(conf_dir, "descriptor", name)
    cfg.backbone, cfg.pretrained, cfg.checkpoint = None, False, None
    cfg.dim = backbone.embed_dim
    return instantiate(cfg, backbone=backbone).eval()


def cut_seconds(store: RegionStore, token_cache: FeatureCache, cutter, repeats: int = 1) -> float:
    """Seconds one core spends cutting every image of ``store`` (its cached tokens),
    one after the other: the CPU work the pool has to hide."""
    grids = [token_cache.patch_grid(image_id) for image_id in store.image_ids]
    started = time.perf_counter()
    for _ in range(repeats):
        for grid in grids:
            cutter(grid)
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--short-side", type=int, default=360)
    parser.add_argument("--backbone", default="dino_vits16")
    parser.add_argument("--descriptor", default="resnet50")
    parser.add_argument("--cutter", default="ksums")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--forward-ms", type=float, default=50.0,
                        help="stand-in wait per batch, per network (ms)")
    parser.add_argument("--cut-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--extra", default="{}",
                        help="JSON of further extract_regions options (e.g. cut_pool)")
    parser.add_argument("--conf-dir", type=Path,
                        default=Path(__file__).resolve().parents[2] / "conf")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the stand-in forwards need no CPU; leave the cores to the cuts

    backbone = build(args.conf_dir, "backbone", args.backbone)
    cutter = build(args.conf_dir, "cutter", args.cutter)
    descriptor = build_descriptor(args.conf_dir, args.descriptor, backbone)
    stand_ins = [StandInForward(backbone, args.forward_ms / 1000)]
    if descriptor.needs_image:
        stand_ins.append(StandInForward(descriptor, args.forward_ms / 1000))
    options = dict(backbone=backbone, cutter=cutter, descriptor=descriptor,
                   batch_size=args.batch_size, progress=False, **json.loads(args.extra))
    config = {"bench": {k: str(v) for k, v in vars(args).items()}}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        images = write_images(folder, args.images, args.short_side)
        # Recording pass: real forwards (slow, outside the timing); also compiles numba.
        token_cache = FeatureCache(os.path.join(tmp, "tokens"), kind="tokens", key=config)
        recorded = extract_regions(images, store_dir=os.path.join(tmp, "recorded"),
                                   config=config, cut_workers=0, token_cache=token_cache,
                                   **options)
        cut_total = cut_seconds(recorded, token_cache, cutter)
        for stand_in in stand_ins:
            stand_in.recording = False
        for workers in args.cut_workers:
            for stand_in in stand_ins:
                stand_in.waited, stand_in.calls = 0.0, 0
            store = extract_regions(images, store_dir=os.path.join(tmp, f"n{workers}"),
                                    config=config, cut_workers=workers, **options)
            timings = store.summary["timings_rank0_seconds"]
            loop = timings["predict_loop"]
            forward = sum(s.waited for s in stand_ins)
            if store.num_images != recorded.num_images or store.num_regions != recorded.num_regions:
                raise RuntimeError("the stand-in run found other regions than the recording")
            runs.append({
                "cut_workers": workers,
                "wall_s": round(loop, 3),
                "forward_s": round(forward, 3),
                "cut_s": round(cut_total, 3),
                "sum_s": round(forward + cut_total, 3),
                "bound_s": round(max(forward, cut_total / workers), 3),
                "wall_over_bound": round(loop / max(forward, cut_total / workers), 3),
                "device_busy": round(forward / loop, 3),
                "forward_calls": sum(s.calls for s in stand_ins),
                # main-thread time neither waiting on a forward nor on a cut
                # (decoding, pooling, writing): what the overlap cannot hide
                "main_thread_other_s": round(loop - forward - timings.get("cut_wait", 0.0), 3),
                "timings": timings,
            })
        images_done, regions = recorded.num_images, recorded.num_regions
    record = {"backbone": args.backbone, "descriptor": args.descriptor, "cutter": args.cutter,
              "images": images_done, "regions": regions, "batch_size": args.batch_size,
              "forward_ms_per_batch_per_network": args.forward_ms, "runs": runs,
              "cpu_affinity": len(os.sched_getaffinity(0)),
              "load_average_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__,
              "cut_s_per_image": round(cut_total / max(images_done, 1), 4),
              "extra": json.loads(args.extra)}
    text = json.dumps(record, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(f"\n{images_done} images, {regions} regions; cut {cut_total:.2f} s on one core "
          f"({1000 * record['cut_s_per_image']:.0f} ms/image)")
    print(f"{'N':>3} {'wall s':>8} {'forward s':>10} {'cut/N s':>8} {'max s':>7} {'sum s':>7} "
          f"{'wall/max':>9} {'device busy':>12} {'main other s':>13}")
    for run in runs:
        n = run["cut_workers"]
        print(f"{n:>3} {run['wall_s']:8.2f} {run['forward_s']:10.2f} {run['cut_s'] / n:8.2f} "
              f"{run['bound_s']:7.2f} {run['sum_s']:7.2f} {run['wall_over_bound']:9.2f} "
              f"{100 * run['device_busy']:11.1f}% {run['main_thread_other_s']:13.2f}")


if __name__ == "__main__":
    main()
