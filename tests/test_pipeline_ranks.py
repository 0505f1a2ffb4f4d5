"""The pipeline under several ranks: only global rank 0 goes past the extraction.

The 2-process runs start run.py as a user does (gloo on CPU, Lightning's own DDP
relaunch and ddp_spawn); they take minutes on a shared 2-core machine, hence slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import claid.engine.extraction_stage as stage
from claid.pipeline import run

REPO = Path(__file__).resolve().parents[1]
TINY = ["backbone=dino_vits8", "backbone.pretrained=false", "descriptor.pretrained=false",
        "engine.batch_size=4", "dataset.n_scenes=6", "dataset.n_queries=3",
        "dataset.image_size=[96,128]", "search.shuffle_draws=20"]


def test_a_rank_other_than_zero_only_extracts(compose_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("LOCAL_RANK", "1")  # as Lightning starts the second device's rank
    extracted = []
    monkeypatch.setattr(stage, "extract_stage", lambda cfg, bench, parts, cache: extracted.append(bench))
    result = run(compose_cfg(*TINY), run_dir=tmp_path / "run")
    assert result is None and len(extracted) == 1
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run opened on this rank


def _run_py(*args, launcher=(), timeout=1200):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "CLAID_RANK_JOB")}
    done = subprocess.run([sys.executable, *launcher, "run.py", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return output


def _mlflow_runs(root: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/outputs/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("claid")
    return client.search_runs([experiment.experiment_id])


def _summaries(root: Path) -> list[dict]:
    return [json.loads(p.read_text())["summary"]
            for p in sorted((root / "outputs" / "cache").glob("regions-*/manifest.json"))]


def _shard_ranks(store: Path) -> set[int]:
    return {int(shard.name.split("-")[1].lstrip("r")) for shard in (store / "shards").iterdir()}


@pytest.mark.slow
def test_ddp_multirun_runs_each_job_once_and_its_pipeline_on_rank_zero(tmp_path):
    sweep = tmp_path / "sweep"
    output = _run_py("-m", "store.dtype=float16,float32", *TINY, "engine.strategy=ddp",
                     "engine.devices=2", f"paths.root_dir={tmp_path}", f"hydra.sweep.dir={sweep}")

    # the relaunched ranks ran their parent's job, not the sweep again
    assert output.count("Launching 2 jobs locally") == 1
    # two job dirs (beside Hydra's record and the sweep parent's files, claid/tracking/sweep_parent.py)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()) == ["0", "1"]
    for job in ("0", "1"):
        rank_log = (sweep / job / "rank_1.log").read_text()
        assert rank_log.count("extraction done on this rank") == 1
        assert (sweep / job / "metrics.json").exists()
    # one MLflow run and one index per job (and the sweep's parent run), each store
    # written by both ranks
    runs = _mlflow_runs(tmp_path)
    assert len(runs) == 3 and sum("mlflow.parentRunId" in r.data.tags for r in runs) == 2
    cache = tmp_path / "outputs" / "cache"
    assert len(list(cache.glob("index-*"))) == 2
    for store in cache.glob("regions-*"):
        assert _shard_ranks(store) == {0, 1}
    for summary in _summaries(tmp_path):
        assert summary["ranks_reporting"] == 2 and summary["missing"] == []
        assert sum(r["images"] for r in summary["ranks"]) == summary["images"] == 6


@pytest.mark.slow
def test_ddp_spawn_summary_holds_every_ranks_timings(tmp_path):
    _run_py(*TINY, "engine.strategy=ddp_spawn", "engine.devices=2", "tracking=none",
            f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run")

    (summary,) = _summaries(tmp_path)
    assert summary["world_size"] == 2 and summary["ranks_reporting"] == 2
    # the caller's module never ran the loop: the timings come from the ranks' reports
    assert summary["timings_rank0_seconds"]["backbone_forward"] > 0
    for phase in ("backbone_forward", "descriptor_forward", "cut_workers"):
        assert summary["timings_seconds"][phase] == pytest.approx(
            sum(r["timings_seconds"][phase] for r in summary["ranks"]), abs=2e-3)
    assert summary["token_sources"]["backbone"] == 6
    assert (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_torchrun_ranks_share_the_extraction_and_rank_zero_alone_the_rest(tmp_path):
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2")
    output = _run_py(*TINY, "engine.strategy=ddp", "engine.devices=2", f"paths.root_dir={tmp_path}",
                     launcher=torchrun)

    assert output.count("extraction done on this rank") == 1  # rank 1 stopped there
    assert output.count("run dir: ") == 1
    assert len(_mlflow_runs(tmp_path)) == 1
    cache = tmp_path / "outputs" / "cache"
    assert len(list(cache.glob("index-*"))) == 1
    (store,) = cache.glob("regions-*")
    assert _shard_ranks(store) == {0, 1}
    (summary,) = _summaries(tmp_path)
    assert summary["ranks_reporting"] == 2 and summary["missing"] == []
