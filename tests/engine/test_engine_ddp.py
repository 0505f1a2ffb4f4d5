"""Several processes under torchrun (gloo, CPU): a simulated 2-node run, a stale
listing on one rank, and a resume that leaves a rank with nothing to do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from claid.store import RegionStore
from tests.engine.test_engine_extract import assert_stores_equal, run

ROOT = Path(__file__).resolve().parents[2]
RANK_SCRIPT = Path(__file__).with_name("ddp_rank.py")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(tmp_path, images, store_dir, *, nodes: int, per_node: int,
             stale_rank: int | None = None) -> dict[int, dict]:
    """Start ``nodes`` torchrun agents on this machine (one per simulated node) with
    ``per_node`` ranks each; returns what each global rank recorded."""
    images_json, out = tmp_path / "images.json", tmp_path / "ranks"
    images_json.write_text(json.dumps(images))
    out.mkdir(exist_ok=True)
    options = {"accelerator": "cpu", "devices": per_node, "num_nodes": nodes, "strategy": "ddp"}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if stale_rank is not None:
        env["CLAID_TEST_STALE_RANK"] = str(stale_rank)
    port = _free_port()
    agents = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}",
         f"--node-rank={node}", f"--nproc-per-node={per_node}", "--master-addr=127.0.0.1",
         f"--master-port={port}", str(RANK_SCRIPT), str(store_dir), str(images_json), str(out),
         json.dumps(options)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for node in range(nodes)]
    logs = [agent.communicate(timeout=300)[0] for agent in agents]
    for agent, log in zip(agents, logs):
        assert agent.returncode == 0, log[-4000:]
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in out.glob("rank*.json")}


def test_two_simulated_nodes_equal_one_process(image_folder, components, tmp_path):
    """torchrun --nnodes=2 with engine num_nodes=2: shards by global rank, every image
    once, the same regions and vectors as one process."""
    _, images = image_folder
    ranks = torchrun(tmp_path, images, tmp_path / "two", nodes=2, per_node=1)
    assert sorted(ranks) == [0, 1]
    assert not set(ranks[0]["mine"]) & set(ranks[1]["mine"])
    two = RegionStore.open(str(tmp_path / "two"))
    names = [p.name for p in (tmp_path / "two" / "shards").iterdir()]
    assert any("-r000-" in n for n in names) and any("-r001-" in n for n in names)
    assert two.summary["world_size"] == 2 and two.summary["num_nodes"] == 2
    assert two.summary["missing"] == []
    assert_stores_equal(two, run(images, components, tmp_path / "one"))


def test_a_stale_listing_on_one_rank_does_not_split_the_work_twice(image_folder, components,
                                                                    tmp_path):
    """Rank 1 sees none of the images already stored; rank 0's list rules, so the
    remaining images are each done once and none is left out."""
    _, images = image_folder
    store_dir = tmp_path / "store"
    run(images[:6], components, store_dir)  # a first run stored six images
    ranks = torchrun(tmp_path, images, store_dir, nodes=1, per_node=2, stale_rank=1)
    remaining = [image_id for image_id, _ in images[6:]]
    assert ranks[0]["todo"] == ranks[1]["todo"] == remaining
    assert not set(ranks[0]["mine"]) & set(ranks[1]["mine"])
    assert sorted(ranks[0]["mine"] + ranks[1]["mine"]) == sorted(remaining)
    store = RegionStore.open(str(store_dir))
    assert store.summary["missing"] == [] and store.summary["already_done"] == 6
    assert store.summary["new_images"] + store.summary["new_skipped"] == len(remaining)


def test_a_resume_with_fewer_images_than_ranks_reaches_the_barrier(image_folder, components,
                                                                  tmp_path):
    """One image left, two ranks: rank 1 has nothing to do and still finishes."""
    _, images = image_folder
    store_dir = tmp_path / "store"
    run(images[:-1], components, store_dir)
    ranks = torchrun(tmp_path, images, store_dir, nodes=1, per_node=2)
    assert ranks[0]["todo"] == ranks[1]["todo"] == [images[-1][0]]
    assert ranks[1]["mine"] == []
    store = RegionStore.open(str(store_dir))
    assert store.summary["missing"] == [] and store.summary["requested"] == len(images)
    assert sorted(store.image_ids) == sorted(run(images, components, tmp_path / "one").image_ids)
