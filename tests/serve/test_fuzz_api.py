"""claid serve fuzzed from its own OpenAPI schema (Schemathesis, in process over ASGI: no port).

For every operation of ``/openapi.json``, requests that fit the schema (positive) and
requests that break it (negative) are generated; every answer must be below 500, every
4xx a one-line JSON ``{"error": ...}``, and the server must answer ``/api/health`` after.

The generation is derandomized (a fixed seed per operation and mode) and bounded:
``CLAID_FUZZ_EXAMPLES`` examples per operation and mode (default 20, about a minute on a
loaded 2-core machine). Before a release, run it longer:

    CLAID_FUZZ_EXAMPLES=1000 CLAID_FUZZ_SEED=random python -m pytest tests/serve/test_fuzz_api.py
"""

import json
import os
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("httpx")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

from claid.serve import create_app  # noqa: E402
from claid.serve.cli import run_dir_paths  # noqa: E402
from tests.serve.run_dirs import make_runs  # noqa: E402

EXAMPLES = int(os.environ.get("CLAID_FUZZ_EXAMPLES", "20"))
DERANDOMIZE = os.environ.get("CLAID_FUZZ_SEED", "fixed") != "random"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The server over a synthetic run (index, store, images) with its run explorer (two runs)
    and a query set to edit (in the run's own collection folder, under the test's tmp dir)."""
    run_a, run_b = make_runs(tmp_path_factory.mktemp("fuzz"))
    paths = run_dir_paths(run_a)
    return create_app(paths["index_dir"], store_dir=paths["store_dir"], image_root=paths["image_root"],
                      run_dirs=[run_a, run_b], queries_file=f"{paths['image_root']}/queries.jsonl")


def _check(response) -> str | None:
    """What is wrong with one answer (None: nothing)."""
    if response.status_code >= 500:
        return f"status {response.status_code}: {response.text[:300]}"
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError:
            return f"status {response.status_code} with a body that is not JSON: {response.text[:300]}"
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            return f"status {response.status_code} without {{'error': ...}}: {str(body)[:300]}"
        if "\n" in body["error"]:
            return f"a multi-line error: {body['error'][:300]}"
    return None


def _fuzz(operation, mode, seen: list, problems: list) -> None:
    """EXAMPLES generated requests of one operation in one mode (counted in ``seen``)."""

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(case=operation.as_strategy(generation_mode=mode))
    def one(case):
        seen[0] += 1
        response = case.call()
        seen[1][response.status_code] = seen[1].get(response.status_code, 0) + 1
        wrong = _check(response)
        if wrong is not None:
            problems.append(f"{case.method} {case.formatted_path} ({mode.value}): {wrong}")

    try:
        one()
    except Unsatisfiable:  # nothing in the request to break (no parameters, no body)
        assert mode == GenerationMode.NEGATIVE, operation.path
    except Exception as err:  # noqa: BLE001 - e.g. a schema Schemathesis cannot generate for
        problems.append(f"{operation.method.upper()} {operation.path} ({mode.value}): "
                        f"{type(err).__name__}: {str(err)[:300]}")


def test_no_5xx_and_every_4xx_is_a_one_line_json_error(app):
    from fastapi.testclient import TestClient

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/search", "/api/images/{ref}", "/api/health",
                                              "/api/run/queries/{qid}", "/api/queries", "/api/queries/{qid}"}
    problems, counts = [], {}
    start = time.perf_counter()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            seen = counts.setdefault(f"{operation.method.upper()} {operation.path} {mode.value}", [0, {}])
            _fuzz(operation, mode, seen, problems)
    took = time.perf_counter() - start
    for name, seen in counts.items():
        print(f"{seen[0]:5d} {name}  statuses {dict(sorted(seen[1].items()))}")
    print(f"\nfuzzed {sum(c[0] for c in counts.values())} requests over {len(counts)} "
          f"operation x mode pairs in {took:.1f} s")
    assert not problems, "\n".join(problems[:20])
    health = TestClient(app).get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


# -- hostile values: what a schema-driven generator seldom draws (Python's parser limits,
#    non-JSON constants, digits of other scripts), in every field the schema names


class Raw(str):
    """JSON text emitted as is (numbers and nestings json.dumps would not write)."""


def _dump(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return json.dumps(value)


def _hostile_values():
    from hypothesis import strategies as st

    leaves = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(1, 6000).map(lambda n: Raw("9" * n)),  # past float() and past int()'s digit limit
        st.sampled_from([Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw('"\\ud800"')]),
        st.text(alphabet=st.characters(categories=["Nd", "No", "Nl"]), max_size=6),  # digits of any script
        st.text(max_size=30),
        st.integers(1, 40_000).map(lambda d: Raw("[" * d + "]" * d)),  # deeper than the parser recurses
    )
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.text(max_size=8), inner, max_size=3), max_leaves=8)


def _fields(app, content: str) -> list[str]:
    """The field names the OpenAPI schema gives a /api/search body of ``content``."""
    body = app.openapi()["paths"]["/api/search"]["post"]["requestBody"]["content"][content]["schema"]
    names = set(body.get("properties", {}))
    for branch in body.get("anyOf", []):
        names |= set(branch["properties"])
    return sorted(names)


def test_hostile_values_in_every_field_are_refused_in_one_line(app):
    from urllib.parse import quote

    from fastapi.testclient import TestClient
    from hypothesis import strategies as st

    client = TestClient(app, raise_server_exceptions=False)
    values = _hostile_values()
    json_keys = sorted(set(_fields(app, "application/json")) | {"upload", "positives", "junk", "qid"})
    form_keys = [k for k in _fields(app, "multipart/form-data") if k != "image"]
    assert {"image_id", "box", "top"} <= set(json_keys) and "box" in form_keys
    photo = _png_bytes()
    problems, seen = [], [0]

    def ask(what: str, response) -> None:
        seen[0] += 1
        wrong = _check(response)
        if wrong is not None:
            problems.append(f"{what[:200]}: {wrong}")

    @settings(max_examples=EXAMPLES * 2, deadline=None, database=None, derandomize=DERANDOMIZE,
              suppress_health_check=list(HealthCheck))
    @given(body=st.dictionaries(st.sampled_from(json_keys + ["other"]), values, max_size=4),
           form=st.dictionaries(st.sampled_from(form_keys), values, max_size=3),
           upload=st.sampled_from([photo, b"\x89PNG\r\n\x1a\n junk", b""]),
           ref=values, size=values, qid=st.text(max_size=20))
    def one(body, form, upload, ref, size, qid):
        text = _dump(body)
        ask(f"POST /api/search {text}", client.post(
            "/api/search", content=text.encode("utf-8", "surrogatepass"),
            headers={"content-type": "application/json"}))
        for method in ("POST", "PUT"):
            ask(f"{method} /api/queries {text}", client.request(
                method, "/api/queries" + ("" if method == "POST" else f"/{quote(qid, safe='')}"),
                content=text.encode("utf-8", "surrogatepass"), headers={"content-type": "application/json"}))
        fields = {k: _dump(v) for k, v in form.items()}
        ask(f"POST /api/search form {fields}", client.post(
            "/api/search", files={"image": ("q.png", upload, "image/png")}, data=fields))
        # URLs stay under the client's 64 kB limit (uvicorn's own header limit is lower)
        path = quote((ref if isinstance(ref, str) and not isinstance(ref, Raw) else _dump(ref))[:5000], safe="")
        size = _dump(size)[:5000]
        for suffix in ("", "/regions", f"?size={quote(size, safe='')}"):
            ask(f"GET /api/images/{path}{suffix}", client.get(f"/api/images/{path}{suffix}"))
        ask(f"GET /api/images?offset={size}", client.get(
            "/api/images", params={"offset": size, "limit": _dump(ref)[:5000]}))
        ask(f"GET /api/run/queries/{qid}", client.get(f"/api/run/queries/{quote(qid, safe='')}",
                                                      params={"run": qid}))
        ask(f"GET /api/run/queries?sort={qid}", client.get("/api/run/queries", params={"sort": qid,
                                                                                        "order": qid}))

    start = time.perf_counter()
    one()
    print(f"\nhostile values: {seen[0]} requests in {time.perf_counter() - start:.1f} s")
    assert not problems, "\n".join(problems[:20])
    assert client.get("/api/health").json()["status"] == "ok"


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 100, 50)).save(out, format="PNG")
    return out.getvalue()
