"""``python -m claid search --rerank`` finds the cached DBA index and offline part."""

import json
from pathlib import Path

import numpy as np
import pytest

from claid.pipeline import run
from claid.rerank.cli import parse_methods
from claid.retrieval import main, search

SMALL = ["backbone=dino_vits8", "backbone.pretrained=false", "descriptor.pretrained=false",
         "engine.batch_size=4", "tracking=none"]
TINY = ["dataset.n_scenes=12", "dataset.n_queries=6", "dataset.image_size=[96,128]"]
FAST = ["diffusion.kd=5", "diffusion.truncation=60", "diffusion.kq=3"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from hydra import compose, initialize_config_dir

    tmp = tmp_path_factory.mktemp("cli")
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"paths.root_dir={tmp}", f"paths.output_dir={tmp}/run", *SMALL, *TINY,
            "rerank=[dba,diffusion]", *(f"rerank.{o}" for o in FAST)])
    result = run(cfg, run_dir=tmp / "run")
    bench = json.loads((tmp / "run" / "rankings.json").read_text())
    return result, bench, tmp




def test_cli_uses_the_cached_dba_index_and_offline_part(built, capsys):
    result, _, tmp = built
    index_dir = Path(result.report["settings"]["index"])
    notes = result.report["settings"]["rerank"]["methods_run"]
    image = next(Path(tmp).rglob("*.jpg"))
    plain = search([image], index_dir=index_dir, top=5)[0]
    dba = search([image], index_dir=index_dir, top=5, rerank=parse_methods("dba"))[0]
    # the same query searched directly in the DBA index dir the run cached
    direct = search([image], index_dir=notes["dba"]["dir"], top=5)[0]
    assert dba.images == direct.images and np.allclose(dba.scores, direct.scores)
    sets = [f"--rerank-set={o}" for o in FAST]
    main(["--index-dir", str(index_dir), str(image), "--rerank", "dba,diffusion", *sets, "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["score"] > 0 for r in rows)
    both = search([image], index_dir=index_dir, top=10,
                  rerank=parse_methods("dba,diffusion", [o for o in FAST]))[0]
    assert [r["image"] for r in rows] == both.images
    assert plain.images  # the plain search still works beside them


def test_cli_says_what_is_missing(built, capsys):
    result, _, tmp = built
    index_dir = Path(result.report["settings"]["index"])
    image = next(Path(tmp).rglob("*.jpg"))
    with pytest.raises(SystemExit) as stop:
        main(["--index-dir", str(index_dir), str(image), "--rerank", "diffusion"])  # default kd=50: not built
    assert "no cached diffusion offline part" in str(stop.value) and "rerank=diffusion" in str(stop.value)
    with pytest.raises(SystemExit) as stop:
        main(["--index-dir", str(index_dir), str(image), "--rerank", "dba", "--rerank-set", "dba.n=0"])
    assert "rerank.dba n must be an integer >= 1" in str(stop.value)
