"""experiment=tokencut_published / maskcut_published set the backbone, facet and resize
of the published methods; experiment=table1_detectors sweeps the four cutters and its
summary lists them side by side."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from claid.models.preprocessing import image_to_tensor

REPO = Path(__file__).resolve().parents[1]


def _photo(height=100, width=150):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_tokencut_published_is_dino_vits16_keys_zero_padded(compose_cfg):
    cfg = compose_cfg("experiment=tokencut_published", "backbone.pretrained=false")
    assert cfg.backbone.model_name == "vit_small_patch16_224.dino" and cfg.backbone.facet == "keys"
    assert cfg.cutter._target_.endswith("TokenCutCutter") and cfg.cutter.alpha == 0.2
    backbone = instantiate(cfg.backbone)
    image = _photo()
    pixels, scale = backbone.preprocess(image)
    assert tuple(pixels.shape) == (3, 112, 160) and scale == (1.0, 1.0)  # native size, padded up
    expected = image_to_tensor(image, backbone.mean, backbone.std)
    assert torch.equal(pixels[:, :100, :150], expected)
    assert (pixels[:, 100:] == 0).all() and (pixels[:, :, 150:] == 0).all()
    tokens = backbone(pixels[None])
    assert tuple(tokens.shape) == (1, 7 * 10, 384)


def test_maskcut_published_is_dino_vitb8_keys_on_a_480_square_lanczos_resize(compose_cfg):
    cfg = compose_cfg("experiment=maskcut_published", "backbone.pretrained=false")
    assert cfg.backbone.model_name == "vit_base_patch8_224.dino" and cfg.backbone.facet == "keys"
    assert cfg.cutter._target_.endswith("MaskCutCutter") and cfg.cutter.alpha == 0.15
    assert cfg.cutter.n_masks == 3
    # what maskcut_forward returns: each mask minus the earlier ones; plain maskcut: raw masks
    assert cfg.cutter.disjoint is True and compose_cfg("cutter=maskcut").cutter.disjoint is False
    backbone = instantiate(cfg.backbone)
    image = _photo()
    pixels, scale = backbone.preprocess(image)
    assert tuple(pixels.shape) == (3, 480, 480) and scale == (100 / 480, 150 / 480)
    expected = image_to_tensor(image.resize((480, 480), Image.LANCZOS), backbone.mean, backbone.std)
    assert torch.equal(pixels, expected)
    assert backbone.input_size(1000, 300) == (480, 480)


def test_an_unknown_fit_or_filter_is_refused(compose_cfg):
    for key in ("backbone.grid_fit=stretch", "backbone.resample=nearest", "backbone.square_size=4"):
        with pytest.raises(Exception, match="grid_fit|resample|square_size"):
            instantiate(compose_cfg("backbone=dino_vits16", "backbone.pretrained=false", key).backbone)


def test_table1_detectors_sweeps_the_four_cutters():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        full = compose(config_name="config", overrides=["experiment=table1_detectors"], return_hydra_config=True)
    params = OmegaConf.select(full, "hydra.sweeper.params")
    assert params["cutter"].split(",") == ["ksums", "ncut", "tokencut", "maskcut"]


@pytest.mark.slow
def test_table1_detectors_summary_lists_the_cutters_side_by_side(tmp_path):
    done = subprocess.run(
        [sys.executable, "run.py", "-m", "experiment=table1_detectors", "backbone=dino_vits8",
         "backbone.pretrained=false", "descriptor.pretrained=false", "dataset.n_scenes=12",
         "dataset.n_queries=6", "dataset.image_size=[96,128]", "engine.threads=1", "cache.tokens=true",
         f"paths.root_dir={tmp_path}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
         f"tracking.artifact_location={tmp_path}/art", f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = (tmp_path / "sweep" / "summary" / "summary.csv").read_text().strip().splitlines()
    assert summary[0].split(",")[0] == "cutter"
    assert sorted(line.split(",")[0] for line in summary[1:]) == ["ksums", "maskcut", "ncut", "tokencut"]
    assert "sweep summary" in done.stdout
    print(done.stdout[done.stdout.index("sweep summary"):])
