"""Two runs started at once on the same collection and cache: each gets its own run
dir, one extracts while the other waits and reuses, nothing is extracted twice."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from claid.store import RegionStore

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "backbone=dino_vits8", "backbone.pretrained=false", "descriptor.pretrained=false",
    "dataset.n_scenes=12", "dataset.n_queries=4", "dataset.image_size=[64,96]",
    "engine.shard_size=2", "search.shuffle_draws=10", "tracking=none",
]


@pytest.mark.slow  # two full run.py processes: about 30 s of CPU, minutes on a shared machine
def test_two_runs_at_once_share_the_store_and_keep_their_own_run_dirs(tmp_path):
    command = [sys.executable, str(REPO / "run.py"), *OVERRIDES, f"paths.root_dir={tmp_path}"]
    # started from tmp_path: the default run dir (outputs/runs/<date>/<time>) lands there
    runs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-3000:]
    run_dirs = [next(line.split(": ", 1)[1].strip() for line in out.splitlines() if line.startswith("run dir: "))
                for out, _ in outputs]
    assert run_dirs[0] != run_dirs[1]
    reports = [json.loads((Path(d) / "metrics.json").read_text()) for d in run_dirs]
    metrics = [{k: v for k, v in r["metrics"].items() if not k.startswith("time/")} for r in reports]
    assert metrics[0] == metrics[1] and "lab/mAP-all" in metrics[0]

    (store_dir,) = (tmp_path / "outputs" / "cache").glob("regions-*")
    store = RegionStore.open(str(store_dir))
    assert store.num_images == 12
    # every committed image entry is unique: no image was extracted by both runs
    entries = [entry["id"] for shard in store._shards for entry in shard.info["images"]]
    assert sorted(entries) == sorted(store.image_ids)
    assert not list((store_dir / "staging").iterdir())
