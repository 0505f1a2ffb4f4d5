"""The built-in re-ranking steps, one per method, each a :class:`claid.interfaces.Reranker`:
``step(state, settings) -> state`` on a :class:`claid.rerank.apply.RerankState`.

    dba          the search runs again on the DBA index (a cached index dir)
    aqe          the query vector is expanded and searched again
    diffusion    region scores from the offline part, then image scores
    superglobal  the head of the list re-ordered (MDescAug + RerankwMDA), no offline part
    ames         the head of the list re-ordered by AMES over local descriptors

:func:`rerank` runs them in the order of
:data:`claid.rerank.settings.ORDER`, database side first. A new method is one more
step here, its settings dataclass in :mod:`claid.rerank.settings` and its YAML in
``conf/rerank/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from claid.rerank.apply import LocalInputs, RerankState, diffuse, search_whitened
from claid.rerank.aqe import expand_queries
from claid.rerank.common import whitened_view
from claid.rerank.settings import (
    ORDER,
    AmesSettings,
    AQESettings,
    DBASettings,
    DiffusionSettings,
    SuperGlobalSettings,
    as_dict,
)
from claid.rerank.superglobal import superglobal_rankings


class DBA:
    """Database-side augmentation: each region vector replaced by a weighted sum of its
    neighbours' (a new, cached index), then the search again."""

    name, settings_type = "dba", DBASettings

    def __call__(self, state: RerankState, settings: DBASettings) -> RerankState:
        index, rows, note = state.prepare("dba", state.index, state.rows, settings)
        rankings = search_whitened(index, rows, state.qw, state.qids, state.own, state.k, state.memory_gb)
        return replace(state, index=index, rows=rows, rankings=rankings, notes={**state.notes, "dba": note})


class AQE:
    """alpha-QE: the query expanded by the best-matching regions of its first images."""

    name, settings_type = "aqe", AQESettings

    def __call__(self, state: RerankState, settings: AQESettings) -> RerankState:
        qw = expand_queries(whitened_view(state.index), state.rows, state.qw, state.rankings, state.exclusions,
                            n=settings.n, alpha=settings.alpha)
        rankings = search_whitened(state.index, state.rows, qw, state.qids, state.own, state.k, state.memory_gb)
        note = {**as_dict(settings), "result_vector": "best-matching region of each of the first n images of "
                "the list the protocol evaluates (own image, query images, junk removed)"}
        return replace(state, qw=qw, rankings=rankings, notes={**state.notes, "aqe": note})


class Diffusion:
    """Diffusion over the region graph (fyang93/diffusion): an offline part, then scores."""

    name, settings_type = "diffusion", DiffusionSettings

    def __call__(self, state: RerankState, settings: DiffusionSettings) -> RerankState:
        offline, note = state.prepare("diffusion", state.index, state.rows, settings)
        rankings = diffuse(offline, state.index, state.rows, state.qw, state.qids, state.own,
                           state.exclusions, settings)
        return replace(state, rankings=rankings, notes={**state.notes, "diffusion": note})


class SuperGlobal:
    """SuperGlobal's MDescAug + RerankwMDA over the head of every list."""

    name, settings_type = "superglobal", SuperGlobalSettings

    def __call__(self, state: RerankState, settings: SuperGlobalSettings) -> RerankState:
        rankings = superglobal_rankings(state.rows, state.qw, state.rankings, state.exclusions,
                                        m=settings.m, k=settings.k, beta=settings.beta)
        note = {**as_dict(settings), "shortlist": "first m images of the list the protocol evaluates (own "
                "image, query images, junk removed), each by its best-matching region for the query "
                "(as searched last)"}
        return replace(state, rankings=rankings, notes={**state.notes, "superglobal": note})


class AMES:
    """AMES: a transformer scoring query / database pairs from their local descriptors,
    fused with the search score over the head of every list."""

    name, settings_type = "ames", AmesSettings

    def __call__(self, state: RerankState, settings: AmesSettings) -> RerankState:
        from claid.rerank.ames import ames_rankings  # torch: only when AMES runs

        local = state.local
        if local is None or len(local.query_features) != len(state.rankings):
            from claid.config.rules import SettingsError

            raise SettingsError("rerank=ames needs the local-descriptor store, the AMES model and each "
                                "query's local descriptors, and this caller did not provide them")
        rankings = ames_rankings(local.model, local.store, local.query_features, state.rankings,
                                 state.exclusions, settings)
        lam, gamma = settings.fusion
        note = {**as_dict(settings), "lambda_used": lam, "gamma_used": gamma, "store": str(local.store.directory),
                "bytes_per_image": round(local.store.bytes_per_image(), 1), **local.sources}
        return replace(state, rankings=rankings, notes={**state.notes, "ames": note})


#: method name -> its step, one per entry of claid.rerank.settings.ORDER
STEPS = {step.name: step for step in (DBA(), AQE(), Diffusion(), SuperGlobal(), AMES())}


def rerank(methods: dict, *, index, rows, query_vectors: np.ndarray, qids: Sequence[str],
           own: Sequence[set[str]], exclusions: Sequence[set[str]], rankings: list, k: int | None,
           memory_gb: float, prepare, local: LocalInputs | None = None) -> tuple[list, dict]:
    """Run ``methods`` ({name: settings}) in the running order :data:`~claid.rerank.settings.ORDER`,
    each a step of :data:`STEPS`, and return (rankings, notes).

    Args:
        index, rows: the searched index and its rows (:class:`~claid.rerank.common.RowSource`).
        query_vectors: (Q, D) as searched; qids: their ids.
        own: per query, the images the search itself leaves out (its own image).
        exclusions: per query, what the protocol's evaluation leaves out (feeds alpha-QE
            and diffusion's query neighbours; the ground truth's positives never do).
        rankings: the plain search's rankings.
        prepare: ``prepare(name, index, rows, settings)`` -> (index, rows, note) for
            ``dba``, (offline matrix, note) for ``diffusion``.
        local: what ``ames`` reads (:class:`LocalInputs`); required with ``ames``.
    """
    state = RerankState(index=index, rows=rows, qw=index.transform(np.asarray(query_vectors, dtype=np.float32)),
                        qids=qids, own=own, exclusions=exclusions, rankings=rankings, k=k,
                        memory_gb=memory_gb, prepare=prepare, local=local)
    for name in ORDER:
        if name in methods:
            state = STEPS[name](state, methods[name])
    return state.rankings, state.notes
