"""One rank of ``extract_regions`` on the tiny parts, as torchrun starts it (used by
test_engine_ddp.py, which puts the repository root on PYTHONPATH; not a test).

    python tests/engine/ddp_rank.py STORE_DIR IMAGES_JSON OUT_DIR OPTIONS_JSON

Writes ``OUT_DIR/rank<global rank>.json`` with the to-do list this rank received
and its own share. With ``CLAID_TEST_STALE_RANK=<rank>`` that rank sees a stale
listing of the store (nothing done), as a lagging NFS client would.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from claid.engine import datamodule as datamodule_module
from claid.engine import extract_regions
from claid.store import RegionStore
from tests.engine.tiny_parts import TinyBackbone, TinyDescriptor, tiny_cutter


def main() -> None:
    store_dir, images_json, out_dir, options_json = sys.argv[1:5]
    rank = os.environ["RANK"]
    if os.environ.get("CLAID_TEST_STALE_RANK") == rank:
        RegionStore.done_ids = lambda self: set()  # this rank's listing lags behind

    original_setup = datamodule_module.ImageListDataModule.setup

    def recording_setup(self, stage):
        original_setup(self, stage)
        record = {"todo": [i for i, _ in self.todo_images],
                  "mine": [i for i, _ in self.rank_images]}
        Path(out_dir, f"rank{self.trainer.global_rank}.json").write_text(json.dumps(record))

    datamodule_module.ImageListDataModule.setup = recording_setup
    images = [tuple(pair) for pair in json.loads(Path(images_json).read_text())]
    extract_regions(images, backbone=TinyBackbone().eval(), cutter=tiny_cutter,
                    descriptor=TinyDescriptor().eval(), store_dir=store_dir,
                    config={"backbone": "tiny", "cutter": "tiny", "descriptor": "tiny"},
                    progress=False, dtype="float32", batch_size=3, shard_size=2,
                    **json.loads(options_json))


if __name__ == "__main__":
    main()
