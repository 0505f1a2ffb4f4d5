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


@pytest.mark.slow
def test_the_rerank_table_overlay_sweeps_and_summarises_with_and_without(tmp_path):
    import subprocess
    import sys

    from claid.tracking.run_table import search_runs

    repo = Path(__file__).resolve().parents[2]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = subprocess.run(
        [sys.executable, "run.py", "-m", "experiment=rerank_table", *SMALL[:-1], *TINY,
         *(f"rerank.{o}" for o in FAST if False), f"paths.root_dir={tmp_path}", f"tracking.uri={uri}",
         f"tracking.artifact_location={tmp_path}/art", f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=repo, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = search_runs(uri, "rerank_table")
    children = [r for r in runs if r.data.tags.get("claid.role") != "sweep"]
    assert len(children) == 6  # none, aqe, dba, diffusion, [dba,aqe], superglobal
    summary = (tmp_path / "sweep" / "summary" / "summary.csv").read_text().splitlines()
    header = summary[0].split(",")
    assert header[0] == "rerank" and "before re-ranking" in header and "re-ranking gain" in header
    by_choice = {line.split(",")[0]: line.split(",") for line in summary[1:]}
    assert set(by_choice) >= {"none", "aqe", "dba", "diffusion", "superglobal"}
    gain = header.index("re-ranking gain")
    assert by_choice["none"][gain] == "" and by_choice["aqe"][gain] != ""
