"""The run explorer's JSON API over one or two run dirs (``claid serve --run-dir``).

- ``GET /api/run``: run A's settings, metrics, baselines; run B's too when given;
- ``GET /api/run/queries?sort=<figure>&order=asc|desc&run=0|1``: every query with its
  per-query figures (default: the headline, worst first; queries not scored last);
- ``GET /api/run/queries/{qid}?run=0|1``: the saved ranking, each result marked
  positive / junk / negative / removed, and the query box;
- ``GET /api/run/query-image?qid=<qid>&run=0|1&size=<px>``: the query's own image (a
  query image need not be in the index; only the images the run's queries name are served);
- ``GET /api/run/compare?metric=<key>``: per-query ``metric`` (default: the headline)
  of run A against run B; refused when the two runs' query ids differ.

Everything is read once, at start, from the run dirs' files (:mod:`claid.serve.run_records`);
nothing is recomputed. Bad input gets a 4xx with ``{"error": "<one line>"}``.
"""

from __future__ import annotations

from pathlib import Path

from claid.serve.run_records import RunRecords, load_run

__all__ = ["runs_router"]

ORDERS = ("asc", "desc")


def _error(status: int, message: str):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def _row(query: dict, gradings: list[str]) -> dict:
    found = {g: sum(r["marks"][g] == "positive" for r in query["results"]) for g in gradings}
    return {key: query[key] for key in ("qid", "image", "box", "text", "values", "n_relevant", "n_ranked")} | {
        "n_saved": len(query["results"]), "positives_saved": found}


def runs_router(run_dirs: list[Path]):
    """A FastAPI router over one or two run dirs (checked now: raises ``RunRecordError``)."""
    from fastapi import APIRouter

    if not 1 <= len(run_dirs) <= 2:
        raise ValueError(f"the run explorer takes one or two run dirs, got {len(run_dirs)}")
    runs: list[RunRecords] = [load_run(d) for d in run_dirs]
    router = APIRouter(prefix="/api/run", tags=["runs"])

    def pick(run: str | None) -> RunRecords | str:
        if run in (None, "", "0"):
            return runs[0]
        if run == "1" and len(runs) == 2:
            return runs[1]
        return f"run must be 0{' or 1' if len(runs) == 2 else ' (one run dir given)'}, got {run[:40]!r}"

    def pick_query(run: str | None, qid: str):
        """(the run, query ``qid``'s record), or (the error response, None)."""
        chosen = pick(run)
        if isinstance(chosen, str):
            return _error(400, chosen), None
        record = chosen.by_qid.get(qid)
        if record is None:
            return _error(404, f"unknown query id {qid[:80]!r} in run {chosen.run_dir.name}"), None
        return chosen, record

    @router.get("")
    def run_summary() -> dict:
        """Settings, metrics and baselines of run A (and run B when two)."""
        return {"runs": [r.summary() for r in runs]}

    @router.get("/queries")
    def queries(sort: str | None = None, order: str = "asc", run: str | None = None):
        """Every query with its figures, sorted by ``sort`` (a metric key or "qid")."""
        chosen = pick(run)
        if isinstance(chosen, str):
            return _error(400, chosen)
        key = sort or chosen.headline
        if key != "qid" and key not in chosen.metric_keys:
            return _error(400, f"unknown sort key {key[:60]!r}; choose one of {['qid', *chosen.metric_keys]}")
        if order not in ORDERS:
            return _error(400, f"order must be one of {ORDERS}, got {order[:20]!r}")
        rows = [_row(q, chosen.records["gradings"]) for q in chosen.records["queries"]]
        if key == "qid":
            rows.sort(key=lambda r: r["qid"], reverse=order == "desc")
        else:  # not scored (null) last in either order; ties by qid
            scored = sorted((r for r in rows if r["values"][key] is not None), key=lambda r: r["qid"])
            scored.sort(key=lambda r: r["values"][key], reverse=order == "desc")
            rows = scored + [r for r in rows if r["values"][key] is None]
        return {"run": 0 if chosen is runs[0] else 1, "sort": key, "order": order,
                "metrics": chosen.metric_keys, "headline": chosen.headline, "queries": rows}

    @router.get("/compare")
    def compare(metric: str | None = None):
        """Per-query ``metric`` of run A (``a``) against run B (``b``)."""
        if len(runs) != 2:
            return _error(400, "comparing needs two run dirs (claid serve --run-dir A --run-dir B)")
        a, b = runs
        key = metric or a.headline
        if key not in a.metric_keys or key not in b.metric_keys:
            both = [k for k in a.metric_keys if k in b.metric_keys]
            return _error(400, f"unknown metric {key[:60]!r}; both runs have {both}")
        only_a, only_b = sorted(set(a.by_qid) - set(b.by_qid)), sorted(set(b.by_qid) - set(a.by_qid))
        if only_a or only_b:
            return _error(409, f"the two runs' query ids differ ({len(only_a)} only in A, e.g. {only_a[:3]}; "
                               f"{len(only_b)} only in B, e.g. {only_b[:3]}): per-query figures cannot be paired")
        points = [{"qid": q, "image": a.by_qid[q]["image"], "a": a.by_qid[q]["values"][key],
                   "b": b.by_qid[q]["values"][key]} for q in a.by_qid]
        return {"metric": key, "headline": a.headline, "metrics": [k for k in a.metric_keys if k in b.metric_keys],
                "runs": [str(a.run_dir), str(b.run_dir)], "points": points,
                "n_paired": sum(p["a"] is not None and p["b"] is not None for p in points)}

    @router.get("/query-image")
    def query_image(qid: str, run: str | None = None, size: int | None = None):
        """The image of query ``qid`` (the file, or a JPEG of long side ``size``)."""
        from claid.serve.database_images import file_under_root, sized_image
        from claid.serve.engine import ApiError

        chosen, record = pick_query(run, qid)
        if record is None:
            return chosen  # the one-line error
        root = chosen.report["settings"].get("image_root")
        if record.get("image") is None or not isinstance(root, str):
            return _error(404, f"query {qid[:80]!r} has no image (a text query, or a run without image_root)")
        try:
            return sized_image(file_under_root(root, record["image"], "query image"), size)
        except ApiError as err:
            return _error(err.status, err.message)

    @router.get("/queries/{qid:path}")
    def query(qid: str, run: str | None = None):
        """One query's saved ranking with its marks, its box and its figures."""
        chosen, record = pick_query(run, qid)
        if record is None:
            return chosen  # the one-line error
        return {"run": 0 if chosen is runs[0] else 1, "gradings": chosen.records["gradings"],
                "headline": chosen.headline, **record}

    return router
