"""One small run (4 skimage photos in two folders, random-weight DINO ViT-S/8), shared by the serve tests."""

import json
from pathlib import Path

import pytest
from PIL import Image

CONF = Path(__file__).resolve().parents[2] / "conf"
PHOTOS = {"a/cat.png": "chelsea", "a/coffee.png": "coffee", "b/rocket.png": "rocket",
          "b/astronaut.png": "astronaut"}


@pytest.fixture(scope="session")
def served_run(tmp_path_factory):
    """(run dir, its metrics.json settings) of a run over a manifest collection."""
    from hydra import compose, initialize_config_dir
    from skimage import data

    from claid.pipeline import run

    tmp = tmp_path_factory.mktemp("serve")
    root = tmp / "photos"
    for name, picture in PHOTOS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(getattr(data, picture)()).resize((128, 96)).save(root / name)
    overrides = [f"paths.root_dir={tmp}", f"paths.output_dir={tmp}/run", "tracking=none",
                 "backbone=dino_vits8", "backbone.pretrained=false", "descriptor.pretrained=false",
                 "engine.batch_size=4", "dataset=manifest", f"dataset.root={root}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    run(cfg, run_dir=tmp / "run")
    settings = json.loads((tmp / "run" / "metrics.json").read_text())["settings"]
    return tmp / "run", settings
