"""Two small run dirs on the synthetic benchmark (random-weight networks), made once
per test module: run A as the pipeline test makes it, run B with a whitened index."""

from pathlib import Path

from tests.conftest import CONF

SMALL = ["backbone=dino_vits8", "backbone.pretrained=false", "descriptor.pretrained=false",
         "engine.batch_size=4", "dataset.n_scenes=12", "dataset.n_queries=6", "dataset.image_size=[96,128]"]


def make_runs(root: Path) -> tuple[Path, Path]:
    """(run A, run B) under ``root``; B reuses A's regions (another index only)."""
    from hydra import compose, initialize_config_dir

    from claid.pipeline import run

    base = [f"paths.root_dir={root}", f"paths.output_dir={root}/run", f"tracking.uri=sqlite:///{root}/mlflow.db",
            f"tracking.artifact_location={root}/mlartifacts"]
    dirs = []
    for name, extra in (("runA", []), ("runB", ["index=flat_whiten"])):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=base + SMALL + extra)
        dirs.append(run(cfg, run_dir=root / name).run_dir)
    return dirs[0], dirs[1]
