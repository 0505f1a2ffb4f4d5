"""The FastAPI app over one index dir (``python -m claid serve``).

At start the index dir gets the same structural check ``python -m claid search`` makes
(sizes, no checksums: ``claid verify`` stays the full check), so a damaged or missing
index dir stops the server with that one-line error instead of failing per request.
Every refused request is answered with a 4xx and ``{"error": "<one line>"}``.
"""


import asyncio
import json
import time
from pathlib import Path

from claid.serve.database_images import MAX_THUMB, MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS
from claid.serve.engine import ApiError, SearchEngine
from claid.serve.request_fields import (
    ERROR_RESPONSES,
    SEARCH_BODY,
    SearchQuery,
    form_fields,
    image_form,
    parse_search,
    read_json,
)

STATIC = Path(__file__).parent / "static"
MAX_JSON_BYTES = 64 * 1024


def create_app(index_dir: str | Path, *, store_dir: str | Path | None = None,
               image_root: str | Path | None = None, run_dirs=(), workers: int = 1,
               queue: int = 32, threads: int | str | None = "auto",
               max_upload_bytes: int = MAX_UPLOAD_BYTES, max_upload_pixels: int = MAX_UPLOAD_PIXELS,
               queries_file: str | Path | None = None, command_overrides: tuple[str, ...] | list[str] = ()):
    """A FastAPI app serving ``index_dir`` (checked now; raises its one-line error).

    Args:
        index_dir: an index dir written by run.py.
        store_dir: the region store it was built from (region-id queries, hierarchies).
        image_root: the collection folder the image ids are relative to.
        run_dirs: run dirs for the run explorer (``claid.serve.runs``, when present).
        workers, queue: network forwards run at once / may wait (then 503).
        threads: torch / BLAS / FAISS threads (``engine.threads`` rule).
        max_upload_bytes, max_upload_pixels: this server's upload limits.
        command_overrides: the overrides the editor's offered command carries (default: those
            of the first run dir, from its ``.hydra/overrides.yaml``).
        queries_file: a ``queries.jsonl`` the page edits (:mod:`claid.serve.query_editor`);
            None: the server is read-only.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    from claid.serve import database_images as files
    from claid.serve.query_editor import QuerySet, queries_router, run_overrides

    engine = SearchEngine(index_dir, store_dir=store_dir, workers=workers, queue=queue, threads=threads)
    app = FastAPI(title="claid serve", docs_url=None, redoc_url=None)  # /docs below: no CDN
    app.state.engine = engine
    descriptor = (engine.meta.get("descriptor") or {}).get("name")
    query_set = None if queries_file is None else QuerySet(
        queries_file, image_root, engine,
        list(command_overrides) or run_overrides(run_dirs[0] if run_dirs else None))

    @app.exception_handler(ApiError)
    async def _api_error(_, err: ApiError):
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"bad request: {where}: {first.get('msg', 'invalid')}"}, 422)

    @app.exception_handler(HTTPException)
    async def _http(_, err: HTTPException):
        return JSONResponse({"error": " ".join(str(err.detail).split())}, err.status_code)

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "images": len(engine.image_ids), "regions": int(engine.index.ntotal),
                "descriptor": descriptor, "text": engine.text_capable,
                "descriptor_loaded": engine.descriptor_loaded, "index_dir": str(engine.index_dir),
                "store": engine.store is not None, "images_served": image_root is not None,
                "workers": engine.workers, "queue": engine.queue, "threads": engine.threads,
                "max_upload_bytes": max_upload_bytes, "max_upload_pixels": max_upload_pixels,
                "queries_file": None if query_set is None else str(query_set.path)}

    @app.get("/api/images", responses=ERROR_RESPONSES)
    def list_images(offset: int = 0, limit: int = 200, q: str | None = None) -> dict:
        """A page of the database images; ``q``: only ids holding it (case ignored)."""
        if offset < 0 or not 1 <= limit <= 5000:
            raise ApiError(400, f"need offset >= 0 and limit in [1, 5000], got {offset}, {limit}")
        if q is not None and len(q) > 1000:
            raise ApiError(400, f"q must be at most 1000 characters, got {len(q)}")
        matching = (range(len(engine.image_ids)) if not q else
                    [i for i, image_id in enumerate(engine.image_ids) if q.casefold() in image_id.casefold()])
        chosen = matching[offset:offset + limit]
        sizes = engine.store.image_sizes() if engine.store is not None else None
        return {"total": len(matching), "all": len(engine.image_ids), "offset": offset, "images": [
            {"index": i, "id": engine.image_ids[i],
             **({} if sizes is None else {"height": int(sizes[i][0]), "width": int(sizes[i][1])})}
            for i in chosen]}

    @app.get("/api/images/{ref:path}")
    def image(ref: str, request: Request, size: int | None = None):
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        parts = raw.split(b"?")[0].split(b"/api/images/", 1)[-1].split(b"/")
        if len(parts) > 2 or (len(parts) == 2 and parts[1] != b"regions"):
            raise ApiError(404, "unknown image path: percent-encode '/' in image ids (%2F) or use "
                                "the image index, then /api/images/<id> or /api/images/<id>/regions")
        number = files.image_number(engine, parts[0].decode("latin-1"))
        if len(parts) == 2:
            return files.regions_payload(engine, number)
        path = files.image_path(engine, image_root, number)
        if size is None:
            return FileResponse(path)
        if not 1 <= size <= MAX_THUMB:
            raise ApiError(400, f"size must be in [1, {MAX_THUMB}], got {size}")
        height, width = files.image_size(engine, image_root, number)
        return Response(files.thumbnail(path, size), media_type="image/jpeg",
                        headers={"X-Image-Size": f"{width}x{height}"})

    @app.post("/api/search", openapi_extra=SEARCH_BODY, responses=ERROR_RESPONSES)
    async def search(request: Request) -> JSONResponse:
        """Uploads (multipart forms): a JSON body is answered by :class:`JsonSearch`
        before it reaches this route, which documents both in the OpenAPI page."""
        start = time.perf_counter()
        query, image = await _read_upload(request, max_upload_bytes, max_upload_pixels)
        # a JSONResponse, not a dict: FastAPI would validate and re-encode every result
        return JSONResponse(await answer(query, image, start))

    async def answer(body: object, image, start: float) -> dict:
        """The search's answer to one request body (raises ApiError)."""
        query = parse_search(body, upload=image is not None)
        top, k = engine.check_top_k(query.top, query.k)
        vector, forward_ms, cached = await _vector(query, image)
        results = await asyncio.wrap_future(engine.search(vector, top=top, k=k))
        return {"query": query.echo(), "top": top, "k": k, "results": results, "cached": cached,
                "forward_ms": forward_ms, "took_ms": round((time.perf_counter() - start) * 1000, 3)}

    async def _vector(query: SearchQuery, image):
        box = query.box
        if query.kind == "region_id":
            return engine.region_vector(query.value), None, False  # one row: no thread hop
        if query.kind == "text":
            if not engine.text_capable:
                raise ApiError(400, f"this index was built with {descriptor}, which has no text "
                                    "encoder; index with descriptor=siglip_tokens for text queries")
            return (*await _forward(lambda: engine.text_vector(query.value)), False)
        if query.kind == "upload":
            return (*await _forward(lambda: engine.image_query_vector(image, box, "the upload")), False)
        number = files.image_number(engine, str(query.value))
        key = (number, None if box is None else tuple(box))
        vector = engine.cached(key)
        if vector is not None:
            return vector, None, True

        def describe():
            from claid.images import ImageError, load_image

            try:
                picture = load_image(files.image_path(engine, image_root, number))
            except ImageError as err:
                raise ApiError(422, f"cannot decode database image: {err.reason}") from None
            return engine.image_query_vector(picture, box, f"query 0 ({engine.image_ids[number]})")

        vector, ms = await _forward(describe)
        engine.remember(key, vector)
        return vector, ms, False

    async def _forward(fn):
        value, ms = await asyncio.wrap_future(engine.run_network(lambda: engine.timed(fn)))
        return value, ms

    _include_runs(app, run_dirs)
    app.include_router(queries_router(query_set, max_upload_bytes, max_upload_pixels))
    _offline_docs(app)
    app.add_middleware(JsonSearch, answer=answer)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    return app


def _offline_docs(app) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from the files the fastapi-offline package
    ships (FastAPI's own pages load them from a CDN: a blank page offline)."""
    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs-files", StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"),
              name="docs-files")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url="openapi.json", title="claid serve: API",
                                   swagger_js_url="docs-files/swagger-ui-bundle.js",
                                   swagger_css_url="docs-files/swagger-ui.css",
                                   swagger_favicon_url="docs-files/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc():
        return get_redoc_html(openapi_url="openapi.json", title="claid serve: API",
                              redoc_js_url="docs-files/redoc.standalone.js",
                              redoc_favicon_url="docs-files/favicon.png", with_google_fonts=False)


def _include_runs(app, run_dirs) -> None:
    """The run explorer's router (``claid.serve.runs``) when it exists and runs are given."""
    if not run_dirs:
        return
    try:
        from claid.serve.runs import runs_router
    except ImportError:
        return
    app.include_router(runs_router([Path(d) for d in run_dirs]))


class JsonSearch:
    """Pure ASGI middleware: a ``POST /api/search`` with a JSON body is answered here,
    ahead of FastAPI's routing, dependency and exception layers (a third of the event
    loop's time per fast search: bench_serve); uploads (multipart forms) and every other
    request go on to the app. Errors are the API's: 4xx and ``{"error": "<one line>"}``."""

    def __init__(self, app, answer) -> None:
        self.app, self.answer = app, answer

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] != "http" or scope["path"] != "/api/search" or scope["method"] != "POST"
                or _content_type(scope).startswith(b"multipart/form-data")):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            query = read_json(await _receive_body(receive))
            if not isinstance(query, dict):
                raise ApiError(400, "the search body must be a JSON object")
            payload, status = await self.answer(query, None, start), 200
        except ApiError as err:
            payload, status = {"error": err.message}, err.status
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


def _content_type(scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.lower()
    return b""


async def _receive_body(receive) -> bytes:
    """The request body from the ASGI ``receive`` (413 past MAX_JSON_BYTES)."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "the client went away before sending its body")
        body += message.get("body", b"")
        if len(body) > MAX_JSON_BYTES:
            raise ApiError(413, f"JSON body over {MAX_JSON_BYTES} bytes")
        if not message.get("more_body", False):
            return body


async def _read_upload(request, max_bytes: int, max_pixels: int) -> tuple[dict, object]:
    from claid.serve.database_images import decode_upload

    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes + 64 * 1024:
        raise ApiError(413, f"upload of {length} bytes is over this server's limit of {max_bytes}")
    form, data = await image_form(request, max_fields=8, max_bytes=max_bytes)
    query = form_fields(form)
    return query, await asyncio.to_thread(decode_upload, data, max_bytes=max_bytes, max_pixels=max_pixels)
