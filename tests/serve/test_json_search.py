"""claid.serve.app.JsonSearch: the ASGI middleware that answers JSON searches before FastAPI."""

import asyncio
import json

from claid.serve.app import MAX_JSON_BYTES, JsonSearch
from claid.serve.engine import ApiError


def _drive(middleware, path="/api/search", method="POST", content_type=b"application/json",
           chunks=(b"{}",), disconnect=False):
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]
    if disconnect:
        messages[-1:] = [{"type": "http.disconnect"}]
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "method": method, "headers": [(b"content-type", content_type)]}
    asyncio.run(middleware(scope, receive, send))
    return sent


def _middleware():
    passed, asked = [], []

    async def app(scope, receive, send):
        passed.append(scope["path"])

    async def answer(query, image, start):
        asked.append(query)
        if query.get("top") == 0:
            raise ApiError(400, "top must be in [1, 1000], got 0")
        return {"results": [], "query": query}

    return JsonSearch(app, answer), passed, asked


def test_a_json_search_in_chunks_is_answered_here_as_json():
    middleware, passed, asked = _middleware()
    sent = _drive(middleware, chunks=(b'{"region_id"', b": 7, ", b'"top": 3}'))
    assert asked == [{"region_id": 7, "top": 3}] and passed == []
    start, body = sent
    assert start["status"] == 200 and dict(start["headers"])[b"content-type"] == b"application/json"
    assert int(dict(start["headers"])[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"]) == {"results": [], "query": {"region_id": 7, "top": 3}}


def test_refusals_are_one_line_json_errors():
    middleware, _, asked = _middleware()
    for chunks, status, words in [((b"{not json",), 400, "malformed JSON"), ((b"[1, 2]",), 400, "JSON object"),
                                  ((b'{"top": 0}',), 400, "top must be"),
                                  ((b"{" + b" " * MAX_JSON_BYTES, b"}"), 413, "JSON body over")]:
        start, body = _drive(middleware, chunks=chunks)
        assert start["status"] == status and words in json.loads(body["body"])["error"]
    assert asked == [{"top": 0}]  # the oversized body was never parsed
    start, body = _drive(middleware, chunks=(b"{", b"}"), disconnect=True)
    assert start["status"] == 400 and "went away" in json.loads(body["body"])["error"]


def test_uploads_and_every_other_request_go_on_to_the_app():
    middleware, passed, asked = _middleware()
    assert _drive(middleware, content_type=b"multipart/form-data; boundary=x") == []
    assert _drive(middleware, content_type=b"Multipart/Form-Data; boundary=x") == []
    assert _drive(middleware, method="GET") == [] and _drive(middleware, path="/api/health") == []
    assert passed == ["/api/search"] * 3 + ["/api/health"] and asked == []
