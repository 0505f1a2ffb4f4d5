"""Diffusion on the region manifold (Iscen et al., CVPR 2017) in the offline /
online decomposition of Yang et al. (AAAI 2019). Reference: github fyang93/diffusion
(commit 5f5c6b3), ``rank.py: search_old`` (the query is *not* a graph node: its
``kq`` nearest regions weight the offline rows), with ``diffusion.py`` for the
graph and the offline part; not ``rank.py: search`` (the default there, which adds
the queries to the graph and compares normalised offline rows).

Offline, once per index (cached by :mod:`claid.rerank.rerank_stage`):

1. kNN graph. ``kd`` is the size of a region's neighbourhood *counting the region
   itself*, as in the reference (``ids[:, :kd]`` starts with the item, whose own
   entry is then dropped): each region is linked to its ``kd - 1`` nearest *other*
   regions, so ``kd = 50`` (the reference's default) gives 49 others. They come
   from the index's own search (in blocks; self dropped by row number, not by rank,
   so identical parent/child vectors are harmless; with ``same_image: exclude`` the
   regions of its own image are dropped too and the ``kd - 1`` are taken from other
   images), similarities from the store's vectors, negative ones set to 0, raised
   to ``gamma``; only mutual neighbours keep an edge.
2. ``S = D^-1/2 W D^-1/2`` (degrees + 1e-12, as the reference), ``L = I - alpha S``.
3. For every region i: its ``truncation`` nearest regions T_i (itself first), and
   ``f_i = L[T_i, T_i]^-1 e_i`` by conjugate gradient (stop when ||r|| <= tol, at most
   ``max_iter`` iterations, as scipy's ``cg(tol=1e-6, maxiter=20)`` in the
   reference), solved for ``block_items`` regions at once as one block-diagonal
   sparse system. Row i of the sparse offline matrix holds f_i on T_i.

Online, per query: its ``kq`` nearest regions (after the protocol's exclusions),
similarities clipped at 0 and raised to ``gamma``, ``scores = s^gamma @ offline[ids]``,
then image scores from region scores (``aggregate: max | sum``).

With ``truncation`` = N and a converged solve, row i is ``L^-1 e_i`` and the online
scores are ``L^-1 y`` with ``y`` = sum of ``s^gamma`` on the query's neighbours: the
dense solve of ``(I - alpha S) f = y``.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import sparse

from claid.config.rules import SettingsError
from claid.rerank.common import first_valid, whitened_view

GRAPH_EPS = 1e-12


def knn_graph(view, x: np.ndarray, region_image: np.ndarray, *, kd: int, gamma: float,
              same_image: str, extra: int, block_rows: int = 4096) -> sparse.csr_matrix:
    """The mutual kNN affinity W (N, N) float64, symmetric, values ``max(s, 0)^gamma``
    (similarities in float64 from the store's vectors). ``kd``: neighbourhood size
    counting the region itself (``kd - 1`` other regions, as the reference's ``kd``)."""
    from claid.rerank.dba import neighbours

    n = x.shape[0]
    rows, cols, vals = [], [], []
    for start in range(0, n, block_rows):
        block = x[start : start + block_rows]
        ids, ok = neighbours(view, block, start, kd - 1, region_image, same_image, extra)
        sims = np.einsum("bd,bnd->bn", block.astype(np.float64), x[np.maximum(ids, 0)].astype(np.float64))
        r, c = np.nonzero(ok)
        rows.append((r + start).astype(np.int32))
        cols.append(ids[r, c].astype(np.int32))
        vals.append(np.maximum(sims[r, c], 0.0) ** gamma)
    rows, cols, vals = (np.concatenate(a) if a else np.zeros(0, np.int32) for a in (rows, cols, vals))
    w = sparse.csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float64)
    member = sparse.csr_matrix((np.ones_like(vals), (rows, cols)), shape=(n, n), dtype=np.float64)
    mutual = w.multiply(member.T).tocsr()  # kept where j lists i and i lists j
    mutual.eliminate_zeros()
    return mutual


def laplacian(w: sparse.csr_matrix, alpha: float) -> sparse.csr_matrix:
    """``I - alpha D^-1/2 W D^-1/2``."""
    degrees = np.asarray(w.sum(axis=1)).ravel() + GRAPH_EPS
    scale = sparse.diags(degrees ** -0.5)
    return (sparse.identity(w.shape[0], dtype=np.float64, format="csr") - alpha * (scale @ w @ scale)).tocsr()


def truncated_ids(view, block: np.ndarray, start: int, truncation: int) -> np.ndarray:
    """(B, T) the ``truncation`` nearest rows of each row, itself first; -1 pads."""
    t = min(truncation, view.ntotal)
    _, ids = view.search(block, t)
    own = np.arange(start, start + block.shape[0])[:, None]
    others, _ = first_valid(ids, (ids >= 0) & (ids != own), t - 1)
    return np.concatenate([own, others], axis=1)


def block_solve(lap: sparse.csr_matrix, ids: np.ndarray, *, tol: float, max_iter: int,
                position: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Solve ``L[T_b, T_b] f_b = e_0`` for every row b of ``ids`` (B, T; -1 pads)
    at once: one block-diagonal system, batched conjugate gradient with each
    system frozen once converged. ``position``: a (B, N) int16 scratch map filled
    with -1 (reused between blocks; allocated when None). Returns (B, T) float32
    and the iterations run."""
    b_count, t = ids.shape
    n = lap.shape[0]
    if position is None:
        position = np.full((b_count, n), -1, dtype=np.int16 if t < 2**15 else np.int32)
    block_rows, local_of = np.nonzero(ids >= 0)
    position[block_rows, ids[block_rows, local_of]] = local_of  # item b: global id -> place in T_b
    flat = ids.ravel()
    present = np.flatnonzero(flat >= 0)
    sub = lap[flat[present]]  # CSR rows of every truncated set, in order
    counts = np.diff(sub.indptr)
    row_of = np.repeat(present, counts)  # flat position of each entry's row
    local = position[row_of // t, sub.indices]
    hit = local >= 0
    position[block_rows, ids[block_rows, local_of]] = -1  # clean for the next block
    rows, cols = row_of[hit], local[hit].astype(np.int64) + (row_of[hit] // t) * t
    indptr = np.zeros(b_count * t + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=b_count * t), out=indptr[1:])
    a = sparse.csr_matrix((sub.data[hit], cols, indptr), shape=(b_count * t, b_count * t))
    # pads have no entries and a zero right-hand side: they stay 0
    rhs = np.zeros((b_count, t))
    rhs[:, 0] = 1.0
    x = np.zeros_like(rhs)
    r = rhs.copy()
    p = r.copy()
    rs = (r * r).sum(axis=1)
    bound = tol * np.sqrt((rhs * rhs).sum(axis=1))
    done = 0
    for done in range(1, max_iter + 1):
        active = np.sqrt(rs) > bound
        if not active.any():
            done -= 1
            break
        ap = (a @ p.ravel()).reshape(b_count, t)
        denom = (p * ap).sum(axis=1)
        step = np.where(active, rs / np.where(denom == 0, 1, denom), 0.0)
        x += step[:, None] * p
        r -= step[:, None] * ap
        rs_new = (r * r).sum(axis=1)
        beta = np.where(active, rs_new / np.where(rs == 0, 1, rs), 0.0)
        p = np.where(active[:, None], r + beta[:, None] * p, p)
        rs = np.where(active, rs_new, rs)
    return x.astype(np.float32), done


class OutOfReach(SettingsError):
    """The offline part would not fit this machine's measured budget; nothing was started
    (a SettingsError: ``run.py`` prints its one line)."""


def offline_estimate_gb(n: int, dim: int, settings) -> float:
    """Peak memory of :func:`offline_part` (GiB): the offline matrix (T values + ids per
    item), the whitened vectors, the graph (COO + CSR copies) and one block's scratch."""
    t = min(settings.truncation, n)
    graph = n * settings.kd * (8 + 4 + 4) * 4
    block = settings.block_items * (n * 2 + t * settings.kd * 40)
    return (n * t * (4 + 4) + n * dim * 4 + graph + block) / 2**30


def check_reach(n: int, dim: int, settings) -> None:
    """Stop before starting when the offline part is out of this machine's reach."""
    estimate = offline_estimate_gb(n, dim, settings)
    if estimate > settings.max_gb:
        raise OutOfReach(f"offline diffusion over {n} regions needs about {estimate:.1f} GiB, more than "
                         f"rerank.diffusion.max_gb={settings.max_gb}; lower rerank.diffusion.truncation "
                         "or raise max_gb (experiments/bench_rerank/README.md has the measured figures)")
    if settings.max_regions is not None and n > settings.max_regions:
        raise OutOfReach(f"offline diffusion over {n} regions: the largest collection measured within "
                         f"15 min on a 2-core machine is {settings.max_regions} regions "
                         "(experiments/bench_rerank/README.md); set rerank.diffusion.max_regions=null "
                         "(or larger) to run it anyway")


def offline_part(index, rows, settings) -> tuple[sparse.csr_matrix, dict]:
    """The offline diffusion matrix (N, N) CSR float32, row i = f_i on T_i, and timings.

    Raises:
        OutOfReach: before any work, when :func:`check_reach` says so.
    """
    from claid.rerank.common import ImageRows

    check_reach(rows.n_rows, index.dim, settings)
    started = time.perf_counter()
    x = rows.all_vectors()  # a RowSource
    view = whitened_view(index)
    region_image = rows.region_image
    extra = ImageRows(region_image, len(rows.image_ids)).max_rows if settings.same_image == "exclude" else 0
    w = knn_graph(view, x, region_image, kd=settings.kd, gamma=settings.gamma,
                  same_image=settings.same_image, extra=extra)
    lap = laplacian(w, settings.alpha)
    graph_s = time.perf_counter() - started
    n = x.shape[0]
    t = min(settings.truncation, n)
    index_type = np.int32 if n * t < 2**31 else np.int64  # scipy keeps int32 ids: no 2nd copy
    indptr = np.arange(0, (n + 1) * t, t, dtype=index_type)
    indices = np.empty(n * t, dtype=np.int32)
    data = np.empty(n * t, dtype=np.float32)
    iterations = []
    scratch = np.full((min(settings.block_items, n), n), -1, dtype=np.int16 if t < 2**15 else np.int32)
    for start in range(0, n, settings.block_items):
        block = x[start : start + settings.block_items]
        ids = truncated_ids(view, block, start, t)
        scores, its = block_solve(lap, ids, tol=settings.tol, max_iter=settings.max_iter,
                                  position=scratch[: block.shape[0]])
        iterations.append(its)
        scores[ids < 0] = 0.0
        lo, hi = start * t, (start + block.shape[0]) * t
        indices[lo:hi] = np.maximum(ids, 0).ravel()  # pads: column of an existing id, value 0
        data[lo:hi] = scores.ravel()
    offline = sparse.csr_matrix((data, indices, indptr), shape=(n, n))
    info = {"graph_seconds": round(graph_s, 3), "seconds": round(time.perf_counter() - started, 3),
            "edges": int(w.nnz), "truncation": t, "max_cg_iterations_run": int(max(iterations, default=0))}
    return offline, info


def online_scores(offline: sparse.csr_matrix, sims: np.ndarray, ids: np.ndarray, ok: np.ndarray,
                  gamma: float) -> sparse.csr_matrix:
    """(Q, N) region scores ``sum_j max(s_j, 0)^gamma offline[id_j]`` per query."""
    q = ids.shape[0]
    weights = np.where(ok, np.maximum(sims, 0.0), 0.0) ** gamma
    r, c = np.nonzero(ok)
    seeds = sparse.csr_matrix((weights[r, c], (r, ids[r, c])), shape=(q, offline.shape[0]))
    return (seeds @ offline).tocsr()
