"""Re-ranking after the search (``conf/rerank/``): alpha-QE, DBA and diffusion over
region vectors, SuperGlobal and AMES over the head of each list, as one optional stage of a
run and as ``python -m claid search --rerank``.

    settings.py   cfg.rerank -> {method: settings}, checked before any work
    aqe.py        alpha-QE: q' = normalise(q + sum s_i^alpha x_i), best region per image
    dba.py        DBA: x_j' = normalise(x_j + sum s_ji^alpha x_i), a new index
    diffusion.py  mutual kNN graph, offline truncated CG solves, online scores
    superglobal.py  SuperGlobal: MDescAug + RerankwMDA over the head of each list
    shortlist.py  the head a shortlist re-ranker re-orders, and the list put back together
    ames_model.py the AMES transformer (pair of local-descriptor sets -> score), its weights
    ames.py       AMES re-ranking: scores of the shortlist, fused with the search's scores
    ames_inputs.py  what rerank=ames reads, built from explicit arguments
    local_features/  detector, top-k selection, codes and the local-descriptor store
    apply.py      the methods in running order (dba -> aqe -> diffusion -> superglobal -> ames)
    cache.py      the DBA index dir and the diffusion offline part, keyed and verified
    stage.py      the pipeline stage: before / after scores in metrics.json
    cli.py        ``python -m claid search --rerank ...``: finds the cached parts
"""

from claid.rerank.settings import ORDER, parse_rerank

__all__ = ["ORDER", "parse_rerank"]
