"""A run dir read for the run explorer: ``metrics.json`` (the run's report) and
``queries.json`` (its per-query records, :mod:`claid.evaluation.query_records`).

Both files may have been written by anyone: every value the explorer uses is
checked for its type and range, the schema versions must be the ones this claid
writes, and the two files must belong together (same dataset; the mean of the
per-query values is the run's metric). Any failure is one :class:`RunRecordError`
line naming the file. Nothing is recomputed from the saved, truncated rankings.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claid.artifacts import schema_version
from claid.evaluation.query_records import MARKS, grading_of

__all__ = ["RunRecordError", "RunRecords", "load_run"]

#: Larger record files are refused before parsing (a run of ~10^4 queries x 100 results is ~0.3 GB).
MAX_FILE_BYTES = 1 << 30
#: How far the mean of the per-query values may sit from the recorded metric (float sums).
MEAN_TOLERANCE = 1e-9


class RunRecordError(ValueError):
    """A run dir the explorer cannot read; the one-line message says which file and why."""


@dataclass
class RunRecords:
    """One run dir, checked: its report, its per-query records, queries by id."""

    run_dir: Path
    report: dict[str, Any]
    records: dict[str, Any]
    by_qid: dict[str, dict[str, Any]]
    overrides: list[str] | None

    @property
    def metric_keys(self) -> list[str]:
        return list(self.records["metrics"])

    @property
    def headline(self) -> str:
        return self.records["headline"]

    def summary(self) -> dict[str, Any]:
        """What the top of the explorer shows: settings, metrics, baselines, counts."""
        report, records = self.report, self.records
        family, headline = records["family"], records["headline"]
        return {
            "run_dir": str(self.run_dir),
            "dataset": report["dataset"],
            "family": family,
            "protocol": report["protocol"],
            "settings": report["settings"],
            "overrides": self.overrides,
            "counts": report["counts"],
            "metrics": report["metrics"],
            "baselines": report.get("baselines", {}),
            "headline": headline,
            "headline_metric": f"{family}/{headline}",
            "headline_value": records["means"].get(headline),
            "metric_keys": records["metrics"],
            "definitions": records["definitions"],
            "gradings": records["gradings"],
            "marks": records["marks"],
            "top": records["top"],
            "n_queries": len(records["queries"]),
        }


def _fail(path: Path, why: str) -> RunRecordError:
    return RunRecordError(" ".join(f"{path}: {why}".split()))


def _read_json(path: Path, missing: str) -> Any:
    if not path.is_file():
        raise _fail(path, missing)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise _fail(path, f"{size:,} bytes, over the explorer's limit of {MAX_FILE_BYTES:,}")

    def no_constant(name: str):
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        return json.loads(path.read_bytes(), parse_constant=no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise _fail(path, f"not valid JSON ({err})") from None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fraction_or_null(value: Any) -> bool:
    return value is None or (_number(value) and 0.0 <= value <= 1.0)


def _box(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(_number(v) for v in value)


def _check(ok: bool, path: Path, why: str) -> None:
    if not ok:
        raise _fail(path, why)


def _check_version(doc: Any, path: Path, kind: str) -> None:
    _check(isinstance(doc, dict), path, "not a JSON object")
    want = schema_version(kind)
    got = doc.get("schema_version")
    _check(got == want and not isinstance(got, bool), path,
           f"schema_version {got!r}, this claid reads {want}; re-run the run with this claid")


def _check_report(report: Any, path: Path) -> None:
    _check_version(report, path, "report")
    _check(isinstance(report.get("dataset"), str), path, "'dataset' is not a string")
    for key in ("protocol", "settings", "counts", "metrics"):
        _check(isinstance(report.get(key), dict), path, f"{key!r} is not an object")
    _check(all(_number(v) for v in report["metrics"].values()), path, "a metric is not a finite number")
    baselines = report.get("baselines", {})
    _check(isinstance(baselines, dict) and all(
        isinstance(v, dict) and all(_number(x) for x in v.values()) for v in baselines.values()),
        path, "'baselines' is not an object of metric objects")


def _check_result(result: Any, gradings: list[str], path: Path, where: str) -> None:
    _check(isinstance(result, dict), path, f"{where} is not an object")
    _check(isinstance(result.get("image"), str), path, f"{where}: 'image' is not a string")
    _check(_number(result.get("score")), path, f"{where}: 'score' is not a finite number")
    _check(_box(result.get("box")), path, f"{where}: 'box' is not 4 numbers")
    marks = result.get("marks")
    _check(isinstance(marks, dict) and sorted(marks) == sorted(gradings)
           and all(m in MARKS for m in marks.values()), path,
           f"{where}: 'marks' must give one of {sorted(MARKS)} for each of {gradings}")


def _check_query(query: Any, records: dict, path: Path, i: int) -> None:
    where = f"queries[{i}]"
    _check(isinstance(query, dict), path, f"{where} is not an object")
    _check(isinstance(query.get("qid"), str) and query["qid"] != "", path, f"{where}: 'qid' is not a string")
    where = f"query {query['qid'][:80]!r}"
    _check(query.get("image") is None or isinstance(query["image"], str), path, f"{where}: 'image' is not a string")
    _check(query.get("text") is None or isinstance(query["text"], str), path, f"{where}: 'text' is not a string")
    _check(query.get("box") is None or _box(query["box"]), path, f"{where}: 'box' is not 4 numbers or null")
    values = query.get("values")
    _check(isinstance(values, dict) and sorted(values) == sorted(records["metrics"]), path,
           f"{where}: 'values' must hold exactly the keys {records['metrics']}")
    _check(all(_fraction_or_null(v) for v in values.values()), path,
           f"{where}: a value is not a fraction in [0, 1] or null")
    n_relevant = query.get("n_relevant")
    _check(isinstance(n_relevant, dict) and sorted(n_relevant) == sorted(records["gradings"])
           and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in n_relevant.values()),
           path, f"{where}: 'n_relevant' must give a count >= 0 for each of {records['gradings']}")
    n_ranked = query.get("n_ranked")
    _check(isinstance(n_ranked, int) and not isinstance(n_ranked, bool) and n_ranked >= 0, path,
           f"{where}: 'n_ranked' is not a count")
    results = query.get("results")
    _check(isinstance(results, list) and len(results) <= min(records["top"], n_ranked), path,
           f"{where}: 'results' is not a list of at most top={records['top']} and n_ranked={n_ranked} entries")
    for j, result in enumerate(results):
        _check_result(result, records["gradings"], path, f"{where} result {j}")


def _check_records(records: Any, path: Path) -> None:
    _check_version(records, path, "run_queries")
    for key in ("dataset", "family", "headline"):
        _check(isinstance(records.get(key), str), path, f"{key!r} is not a string")
    for key in ("metrics", "gradings", "queries"):
        _check(isinstance(records.get(key), list), path, f"{key!r} is not a list")
    keys = records["metrics"]
    _check(bool(keys) and all(isinstance(k, str) for k in keys) and len(set(keys)) == len(keys), path,
           "'metrics' is not a list of distinct names")
    _check(records["headline"] in keys, path, f"headline {records['headline']!r} is not one of 'metrics'")
    gradings = records["gradings"]
    _check(bool(gradings) and all(isinstance(g, str) for g in gradings), path, "'gradings' is not a list of names")
    _check(all(grading_of(k) in gradings for k in keys), path, "a metric names a grading not in 'gradings'")
    top = records.get("top")
    _check(isinstance(top, int) and not isinstance(top, bool) and top >= 1, path, "'top' is not an integer >= 1")
    for key in ("definitions", "means", "marks"):
        _check(isinstance(records.get(key), dict), path, f"{key!r} is not an object")
    _check(all(k in keys and _fraction_or_null(v) and v is not None for k, v in records["means"].items()),
           path, "'means' must map metric names to fractions in [0, 1]")
    for i, query in enumerate(records["queries"]):
        _check_query(query, records, path, i)


def _check_together(report: dict, records: dict, report_path: Path, path: Path) -> None:
    """The per-query values are the run's: their mean is the metric metrics.json holds."""
    _check(records["dataset"] == report["dataset"], path,
           f"dataset {records['dataset']!r} but {report_path.name} says {report['dataset']!r}: "
           "the two files are not of one run")
    for key in records["metrics"]:
        scored = [q["values"][key] for q in records["queries"] if q["values"][key] is not None]
        recorded = records["means"].get(key)
        _check((recorded is None) == (not scored), path,
               f"{key!r}: {len(scored)} queries scored but 'means' {'lacks' if recorded is None else 'has'} it")
        if not scored:
            continue
        mean = math.fsum(scored) / len(scored)
        _check(abs(mean - recorded) <= MEAN_TOLERANCE, path,
               f"{key!r}: the per-query values average {mean:.6f}, 'means' says {recorded:.6f}")
        logged = report["metrics"].get(f"{records['family']}/{key}")
        _check(logged is not None and abs(logged - mean) <= MEAN_TOLERANCE, path,
               f"{key!r}: the per-query values average {mean:.6f} but {report_path.name} has "
               f"{records['family']}/{key} = {logged}: the two files are not of one run")


def _overrides(run_dir: Path) -> list[str] | None:
    """Hydra's ``.hydra/overrides.yaml`` (what the command line changed), when there."""
    import yaml

    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise _fail(path, f"not valid YAML ({type(err).__name__})") from None
    value = [] if value is None else value
    _check(isinstance(value, list) and all(isinstance(v, str) for v in value), path,
           "not a list of override strings")
    return value


def load_run(run_dir: str | Path) -> RunRecords:
    """Read and check one run dir (raises :class:`RunRecordError`, one line)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunRecordError(f"run dir {run_dir} does not exist or is not a folder")
    report_path = run_dir / "metrics.json"
    report = _read_json(report_path, "missing: not a run dir that run.py wrote")
    _check_report(report, report_path)
    path = run_dir / "queries.json"
    records = _read_json(path, "missing: the run dir has no per-query records (written before they existed, "
                               "or the run searched nothing); re-run it with run.py to write them")
    _check_records(records, path)
    _check_together(report, records, report_path, path)
    by_qid = {q["qid"]: q for q in records["queries"]}
    _check(len(by_qid) == len(records["queries"]), path, "a query id appears twice")
    return RunRecords(run_dir=run_dir, report=report, records=records, by_qid=by_qid,
                      overrides=_overrides(run_dir))
