"""The plug-in example outside the package (examples/grid_cutter/): its cutter meets the
Cutter interface, and run.py finds it through Hydra's search path, as its README says."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from claid.interfaces import Cutter, missing_members
from claid.structures import PatchGrid

ROOT = Path(__file__).resolve().parents[1]


def _grid_cutter():
    sys.path.insert(0, str(ROOT))
    try:
        from examples.grid_cutter.grid_cutter import GridCutter
    finally:
        sys.path.remove(str(ROOT))
    return GridCutter


def test_the_grid_cutter_meets_the_cutter_interface():
    cutter = _grid_cutter()(levels=[2, 3])
    assert isinstance(cutter, Cutter) and not missing_members(cutter, Cutter)
    tree = cutter(PatchGrid(tokens=np.zeros((6 * 8, 4), np.float32), grid=(6, 8), patch_size=16))
    assert len(tree) == 4 + 9 and tree.masks.shape == (13, 6, 8)
    assert tree.masks[:4].sum() == 48 and tree.masks[4:].sum() == 48  # each level tiles the grid
    assert np.all(tree.parent[:4] == -1) and np.all(tree.parent[4:] >= 0) and np.all(tree.parent[4:] < 4)
    for row, (x1, y1, x2, y2) in enumerate(tree.boxes):  # boxes are the masks' tight boxes
        ys, xs = np.nonzero(tree.masks[row])
        assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    with pytest.raises(ValueError, match="levels"):
        _grid_cutter()(levels=[0])


def _run(tmp_path, *overrides):
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "run.py", "hydra.searchpath=[file://examples/grid_cutter/conf]", "cutter=grid",
               "backbone=dino_vits16", "backbone.pretrained=false", "descriptor.pretrained=false",
               "dataset.n_scenes=12", "dataset.n_queries=6", "dataset.image_size=[96,128]", "tracking=none",
               f"hydra.run.dir={tmp_path}/run", "engine.threads=1", *overrides]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_run_py_finds_the_example_through_the_search_path(tmp_path):
    done = _run(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["settings"]["components"]["cutter"] == "examples.grid_cutter.grid_cutter.GridCutter"
    assert report["counts"]["regions_per_image"] == 13  # 2x2 + 3x3 cells, every image
    assert "lab/mAP-all" in report["metrics"]

    misspelled = _run(tmp_path / "bad", "+cutter.level=3")
    assert misspelled.returncode == 1
    assert "error: cutter.level is not a setting of examples.grid_cutter.grid_cutter.GridCutter" in misspelled.stderr
