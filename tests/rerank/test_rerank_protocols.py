"""Every protocol family feeds alpha-QE / diffusion the list it evaluates, end to end."""

from dataclasses import replace

import pytest

from claid.pipeline import run
from claid.rerank.common import evaluated_exclusions
from claid.structures import Benchmark, Query

SMALL = ["backbone=dino_vits8", "backbone.pretrained=false", "descriptor.pretrained=false",
         "engine.batch_size=4", "tracking=none"]
TINY = ["dataset.n_scenes=12", "dataset.n_queries=6", "dataset.image_size=[96,128]"]


def _as_family(bench, family):
    """The synthetic benchmark scored under another protocol family (same images)."""
    queries = []
    for q in bench.queries:
        others = [i for i in bench.database if i not in q.positives and i != q.image]
        extra = dict(q.extra)
        if family == "revisited":
            half = max(1, len(q.positives) // 2)
            extra.update(easy=q.positives[:half], hard=q.positives[half:], junk=others[:1])
        queries.append(replace(q, junk=others[:1] if family != "revisited" else [], extra=extra))
    protocol = {"family": family, "query": bench.protocol["query"], "junk": True,
                "remove_queries_from_db": family == "revisited"}
    if family == "gldv2":
        protocol["k"] = [5]
    return replace(bench, queries=queries, protocol=protocol)


@pytest.mark.parametrize("family", ["revisited", "trapezoid", "gldv2"])
def test_aqe_and_diffusion_run_under_every_protocol(compose_cfg, tmp_path, monkeypatch, family):
    import claid.datasets.synthetic as synthetic

    original = synthetic.load_synthetic
    monkeypatch.setattr(synthetic, "load_synthetic", lambda **kw: _as_family(original(**kw), family))
    cfg = compose_cfg(*SMALL, *TINY, "rerank=[aqe,diffusion]", "rerank.diffusion.kd=5",
                      "rerank.diffusion.truncation=60", "rerank.diffusion.kq=3")
    result = run(cfg, run_dir=tmp_path / family)
    metric = {"revisited": "revisited/medium/mAP", "trapezoid": "trapezoid/mAP",
              "gldv2": "gldv2/mAP-at-5"}[family]
    assert 0 <= result.metrics[f"rerank/before/{metric}"] <= 1
    assert result.metrics[f"rerank/after/{metric}"] == pytest.approx(result.metrics[metric])


def _q(qid, image, positives=(), junk=(), extra=None):
    return Query(image=image, qid=qid, positives=list(positives), junk=list(junk), extra=extra or {})


def test_exclusions_follow_the_protocol_rules_not_the_positives():
    queries = [_q("a", "q1", ["p1", "q1"], ["j1"]), _q("b", "q2", ["p2"], ["j2"])]
    bench = Benchmark(name="t", root="", database=["p1", "p2", "j1", "j2", "q1", "q2"], queries=queries,
                      protocol={"family": "trapezoid", "query": "crop", "junk": True})
    # auto: a query image listed as its own positive stays (Oxford classic), junk leaves
    assert evaluated_exclusions(bench, queries) == [{"j1"}, {"q2", "j2"}]
    lab = replace(bench, protocol={"family": "lab", "query": "crop", "junk": False})
    assert evaluated_exclusions(lab, queries) == [{"q1", "q2"}, {"q1", "q2"}]
    rev = [_q("a", "q1", extra={"easy": ["e"], "hard": ["h"], "junk": ["j"]})]
    revisited = replace(bench, queries=rev, protocol={"family": "revisited", "query": "crop"})
    # the hard images are junk in the easy setting but positives in medium: never dropped
    assert evaluated_exclusions(revisited, rev) == [{"q1", "j"}]
