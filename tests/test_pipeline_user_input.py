"""End to end on a user's collection with awkward input: a .gif, a file name that is not
UTF-8, queries without positives. The run finishes and says what it did with each."""

import json
import os

from PIL import Image

from claid.pipeline import run
from tests.test_pipeline import SMALL, _manifest


def test_gif_odd_file_name_and_queries_without_positives(compose_cfg, tmp_path, caplog):
    import logging

    root = tmp_path / "photos"
    _manifest(root)
    frames = [Image.open(root / "coffee.png").convert("RGB"), Image.new("RGB", (128, 96))]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    odd = os.path.join(os.fsencode(root), b"rocket-caf\xe9.png")  # Latin-1 bytes in the name
    Image.open(root / "rocket.png").save(odd, format="PNG")
    (root / "queries.jsonl").write_text(
        json.dumps({"image": "query_cat.png", "box": [10, 5, 100, 90], "qid": "cat"}) + "\n"
        + json.dumps({"image": "coffee.png", "qid": "coffee"}) + "\n")
    with caplog.at_level(logging.WARNING):
        result = run(compose_cfg(*SMALL, "dataset=manifest", f"dataset.root={root}", "tracking=none"),
                     run_dir=tmp_path / "run")
    assert "2 of 2 queries have no positives (queries.jsonl:1, queries.jsonl:2)" in caplog.text
    assert "no query has a positive" in caplog.text
    report = result.report
    assert report["counts"]["queries_without_positives"] == 2
    assert "lab/mAP-all" not in result.metrics and "scores" not in report
    skipped = dict(report["skipped"])
    assert "anim.gif" not in skipped and "broken.jpg" in skipped
    saved = json.loads((tmp_path / "run" / "rankings.json").read_text())
    coffee = next(q for q in saved["queries"] if q["qid"] == "coffee")
    found = [r["image"] for r in coffee["results"]]
    # the gif's first frame is the coffee photo: it is indexed and found near the top
    assert "anim.gif" in found[:2]
    from claid.store import RegionStore

    store = RegionStore.open(report["settings"]["store"])
    assert b"rocket-caf\xe9.png" in [os.fsencode(i) for i in store.image_ids]  # extracted
    assert report["counts"]["images"] == 6  # 4 pngs (coffee.png is a query), the gif, the odd name
