"""The query-set editor of ``claid serve --queries FILE``: a collection's ``queries.jsonl``
(the manifest format, :mod:`claid.datasets.manifest`) drawn in the browser.

- ``GET /api/queries``: every line of FILE, parsed, with the problems of lines someone else
  wrote (by line number), and the command that evaluates the collection with FILE;
- ``POST /api/queries`` ``{"image_id" | "upload", "box", "positives", "junk", "qid"?}``:
  appends one line (``image``, ``box`` in original pixels, ``positives``, ``junk``, ``qid``);
- ``PUT /api/queries/{qid}``, ``DELETE /api/queries/{qid}``: rewrite FILE atomically,
  the previous version kept as ``FILE.bak``;
- ``POST /api/queries/upload`` (a multipart ``image``): a query photo from outside the
  collection, copied into ``queries/`` beside FILE and named by its content hash, under the
  server's byte and pixel limits.

Image ids resolve only through the index's table (or, for an upload, the ``queries/``
folder); a box is checked against its image. Writes hold a lock (``queries/.lock``), so
concurrent appends lose nothing. Nothing is written outside FILE, ``FILE.bak`` and
``queries/``. Without ``--queries`` every route answers 403.
"""

import hashlib
import json
import os
import re
import shlex
import threading
from pathlib import Path

from claid.serve.engine import ApiError

KEYS = ("image", "box", "positives", "junk", "qid")
MAX_QID = 200
UPLOADED = re.compile(r"^[0-9a-f]{32}\.(png|jpg)$")


class QuerySet:
    """FILE, its backup and its ``queries/`` folder, for one collection root."""

    def __init__(self, path: str | Path, root: str | Path | None, engine,
                 run_overrides: list[str] | tuple[str, ...] = ()) -> None:
        self.path = Path(path).absolute()
        self.root = None if root is None else Path(root).absolute()
        self.engine = engine
        # the served run's own overrides (backbone, weights...), so the offered command
        # describes the queries as the collection was described
        self.run_overrides = [o for o in run_overrides if not o.lstrip("+~").startswith(("dataset", "hydra"))]
        self.folder = self.path.parent / "queries"
        self._lock = threading.Lock()
        if self.path.exists() and not self.path.is_file():
            raise ValueError(f"--queries {path}: exists and is not a regular file")

    # -- reading

    def read(self) -> dict:
        """Every line parsed, and the problems of the others (by line)."""
        entries, problems = [], []
        raw = self.path.read_bytes() if self.path.is_file() else b""
        for number, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                entries.append({"line": number, **self._parse_line(line, len(entries))})
            except ValueError as err:
                problems.append({"line": number, "error": f"{self.path.name}:{number}: {err}"})
        return {"file": str(self.path), "queries": entries, "problems": problems,
                "command": self.command(), "note": "a query image leaves the database for every query"}

    def _parse_line(self, line: bytes, index: int) -> dict:
        try:
            record = json.loads(line.decode("utf-8-sig"))
        except RecursionError:
            raise ValueError("nests too deep") from None
        except (UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"not a JSON object ({str(err)[:120]})") from None
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        extra = sorted(set(record) - set(KEYS))
        if extra:
            raise ValueError(f"unknown key(s) {extra}; allowed: {list(KEYS)}")
        if not isinstance(record.get("image"), str):
            raise ValueError("'image' (a path relative to the collection root) is required")
        for key in ("positives", "junk"):
            value = record.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key!r} must be a list of image paths")
        box = record.get("box")
        if box is not None:
            from claid.serve.request_fields import parse_box

            try:
                parse_box(box)
            except ApiError as err:
                raise ValueError(err.message) from None
        qid = record.get("qid", f"{index:04d}")
        if isinstance(qid, bool) or not isinstance(qid, str | int):
            raise ValueError(f"'qid' must be a string, got {str(qid)[:40]}")
        return {"qid": str(qid), "image": record["image"], "box": box,
                "positives": record.get("positives", []), "junk": record.get("junk", [])}

    def command(self) -> str:
        root = self.root if self.root is not None else Path("<collection root>")
        try:
            file = self.path.relative_to(root)
        except ValueError:
            file = self.path
        return " ".join([f"python run.py dataset=manifest dataset.root={shlex.quote(str(root))}",
                         f"dataset.queries_file={shlex.quote(str(file))}",
                         *(shlex.quote(o) for o in self.run_overrides)])

    # -- checking a new entry

    def entry(self, body) -> dict:
        """A request body -> the line to write (ids through the index's table, box checked)."""
        if not isinstance(body, dict):
            raise ApiError(400, "the query body must be a JSON object")
        extra = sorted(set(body) - {"image_id", "upload", "box", "positives", "junk", "qid"})
        if extra:
            raise ApiError(400, f"unknown key(s) {extra}")
        if (body.get("image_id") is None) == (body.get("upload") is None):
            raise ApiError(400, "give exactly one of image_id (a database image) or upload "
                                "(the name POST /api/queries/upload answered)")
        image, size = self._image(body)
        from claid.datasets.boxes import check_box
        from claid.serve.request_fields import parse_box

        box = parse_box(body.get("box"))
        if box is not None:
            try:
                box = [_pixel(v) for v in check_box(box, size, where="box", tolerance=0.0)]
            except ValueError as err:
                raise ApiError(400, str(err)) from None
        lists = {key: self._ids(body.get(key), key) for key in ("positives", "junk")}
        both = set(lists["positives"]) & set(lists["junk"])
        if both:
            raise ApiError(400, f"{sorted(both)[0]!r} is marked both positive and junk")
        if image in lists["positives"] or image in lists["junk"]:
            raise ApiError(400, "the query image cannot be its own positive or junk (it leaves the database)")
        qid = body.get("qid")
        if qid is not None and (not isinstance(qid, str) or not qid.strip() or len(qid) > MAX_QID
                                or any(c in qid for c in "\n\r")):
            raise ApiError(400, f"qid must be a non-empty one-line string of at most {MAX_QID} characters")
        return {"image": image, "box": box, "positives": lists["positives"], "junk": lists["junk"],
                "qid": qid}

    def _image(self, body) -> tuple[str, tuple[int, int]]:
        from claid.images import ImageError, displayed_size
        from claid.serve.database_images import file_under_root, image_number, image_size

        if body.get("image_id") is not None:
            ref = body["image_id"]
            if isinstance(ref, bool) or not isinstance(ref, str | int):
                raise ApiError(400, f"image_id must be an image id or index, got {str(ref)[:80]}")
            number = image_number(self.engine, str(ref))
            return self.engine.image_ids[number], image_size(self.engine, self.root, number)
        name = body["upload"]
        if not isinstance(name, str) or not UPLOADED.match(name.removeprefix("queries/")):
            raise ApiError(400, "upload must be a name POST /api/queries/upload answered")
        path = file_under_root(self.folder, name.removeprefix("queries/"), "upload")
        try:
            size = displayed_size(path)
        except ImageError as err:
            raise ApiError(422, f"cannot read the upload: {err.reason}") from None
        return self._relative(Path(path)), size

    def _ids(self, value, key: str) -> list[str]:
        from claid.serve.database_images import image_number

        if value is None:
            return []
        if not isinstance(value, list) or len(value) > len(self.engine.image_ids):
            raise ApiError(400, f"{key} must be a list of image ids or indices")
        out = []
        for ref in value:
            if isinstance(ref, bool) or not isinstance(ref, str | int):
                raise ApiError(400, f"{key} must be a list of image ids or indices, got {str(ref)[:80]}")
            image = self.engine.image_ids[image_number(self.engine, str(ref))]
            if image not in out:
                out.append(image)
        return out

    def _relative(self, path: Path) -> str:
        if self.root is None:
            raise ApiError(400, "uploads need the collection root (--images or --run-dir)")
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            raise ApiError(400, f"{self.folder} is not under the collection root {self.root}: put the "
                                "queries file inside the collection to keep uploads with it") from None

    # -- writing

    def _locked(self):
        from claid.artifacts import file_lock

        self.folder.mkdir(exist_ok=True)
        return file_lock(self.folder / ".lock", what="the query file")

    def append(self, entry: dict) -> dict:
        with self._lock, self._locked():
            current = self.read()
            taken = {q["qid"] for q in current["queries"]}
            qid = entry["qid"] or _free_qid(taken)
            if qid in taken:
                raise ApiError(409, f"qid {qid!r} is already in {self.path.name}")
            line = _line({**entry, "qid": qid})
            with open(self.path, "ab") as f:
                if f.tell() and not self.path.read_bytes().endswith(b"\n"):
                    line = b"\n" + line
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            return {**entry, "qid": qid}

    def rewrite(self, qid: str, entry: dict | None) -> dict:
        """Replace (``entry``) or delete (None) the line of ``qid``; FILE.bak keeps the old file."""
        from claid.artifacts import atomic_write_bytes

        with self._lock, self._locked():
            old = self.path.read_bytes() if self.path.is_file() else b""
            current = self.read()
            target = next((q for q in current["queries"] if q["qid"] == qid), None)
            if target is None:
                raise ApiError(404, f"no query {qid[:80]!r} in {self.path.name}")
            if entry is not None:
                entry = {**entry, "qid": entry["qid"] or qid}
                if entry["qid"] != qid and entry["qid"] in {q["qid"] for q in current["queries"]}:
                    raise ApiError(409, f"qid {entry['qid']!r} is already in {self.path.name}")
            lines = old.split(b"\n")
            lines[target["line"] - 1] = b"" if entry is None else _line(entry).rstrip(b"\n")
            kept = [line for i, line in enumerate(lines) if line or i == len(lines) - 1]
            atomic_write_bytes(self.path.with_name(self.path.name + ".bak"), old)
            atomic_write_bytes(self.path, b"\n".join(kept))
            return {"qid": qid, "deleted": entry is None, **({} if entry is None else {"entry": entry})}

    def save_upload(self, data: bytes, max_bytes: int, max_pixels: int) -> dict:
        """A query photo -> ``queries/<hash>.png|jpg`` (its bytes as uploaded, checked first)."""
        from claid.serve.database_images import decode_upload

        image = decode_upload(data, max_bytes=max_bytes, max_pixels=max_pixels)  # limits, a real image
        suffix = "jpg" if data[:3] == b"\xff\xd8\xff" else "png"
        name = f"{hashlib.sha256(data).hexdigest()[:32]}.{suffix}"
        with self._lock, self._locked():
            path = self.folder / name
            if not path.is_file():
                from claid.artifacts import atomic_write_bytes

                if suffix == "png" and not data.startswith(b"\x89PNG"):
                    import io

                    out = io.BytesIO()
                    image.save(out, format="PNG")  # another format: kept as its decoded pixels
                    data = out.getvalue()
                atomic_write_bytes(path, data)
        return {"upload": f"queries/{name}", "image": self._relative(path) if self.root else None,
                "width": image.width, "height": image.height}


def _free_qid(taken: set[str]) -> str:
    n = len(taken)
    while f"q{n:04d}" in taken:
        n += 1
    return f"q{n:04d}"


def _line(entry: dict) -> bytes:
    record = {key: entry[key] for key in KEYS}
    return (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode()


_IDS = {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]},
        "description": "database images: ids or indices"}
#: The OpenAPI description of a query body (POST and PUT; the routes read the raw request).
QUERY_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False,
    "description": "exactly one of image_id, upload",
    "properties": {
        "image_id": {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]},
        "upload": {"type": "string", "description": "the name POST /api/queries/upload answered"},
        "box": {"anyOf": [{"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                          {"type": "null"}], "description": "[x1, y1, x2, y2] in original pixels"},
        "positives": _IDS, "junk": _IDS,
        "qid": {"type": "string", "maxLength": MAX_QID}}}}}}}
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"],
    "properties": {"image": {"type": "string", "format": "binary"}}}}}}}


def queries_router(query_set: QuerySet | None, max_bytes: int, max_pixels: int):
    """The editor's routes; every one answers 403 when ``query_set`` is None (read-only)."""
    from fastapi import APIRouter, Request

    from claid.serve.request_fields import read_json

    router = APIRouter(prefix="/api/queries", tags=["queries"])

    def editable() -> QuerySet:
        if query_set is None:
            raise ApiError(403, "this server is read-only: start claid serve with --queries FILE to "
                                "edit a query set")
        return query_set

    async def body_of(request: Request) -> object:
        data = await request.body()
        if len(data) > 1 << 20:
            raise ApiError(413, "query body over 1 MiB")
        return read_json(data, "the query body")

    @router.get("")
    def list_queries() -> dict:
        """Every query of the file, the problems of its other lines, the evaluation command."""
        return editable().read()

    @router.post("", openapi_extra=QUERY_BODY)
    async def add_query(request: Request) -> dict:
        """Append one query (``image_id`` or ``upload``, ``box``, ``positives``, ``junk``, ``qid``)."""
        target = editable()
        return target.append(target.entry(await body_of(request)))

    @router.post("/upload", openapi_extra=UPLOAD_BODY)
    async def upload_query_image(request: Request) -> dict:
        """A query photo from outside the collection (multipart field ``image``)."""
        from claid.serve.request_fields import image_form

        target = editable()
        _, data = await image_form(request, max_fields=2, max_bytes=max_bytes)
        return target.save_upload(data, max_bytes, max_pixels)

    @router.get("/image")
    def uploaded_image(name: str, size: int | None = None):
        """An uploaded query photo (``queries/<hash>.png|jpg``, as POST /upload named it)."""
        from claid.serve.database_images import file_under_root, sized_image

        target = editable()
        if not UPLOADED.match(name.removeprefix("queries/")):
            raise ApiError(400, "name must be one POST /api/queries/upload answered")
        return sized_image(file_under_root(target.folder, name.removeprefix("queries/"), "upload"), size)

    @router.put("/{qid}", openapi_extra=QUERY_BODY)
    async def edit_query(qid: str, request: Request) -> dict:
        """Replace the query ``qid`` (the file rewritten atomically, FILE.bak the old one)."""
        target = editable()
        return target.rewrite(qid, target.entry(await body_of(request)))

    @router.delete("/{qid}")
    def delete_query(qid: str) -> dict:
        """Delete the query ``qid`` (the file rewritten atomically, FILE.bak the old one)."""
        return editable().rewrite(qid, None)

    return router


def _pixel(value) -> int | float:
    """A box coordinate as written: whole pixels as integers (``90``, not ``90.0``)."""
    value = float(value)
    return int(value) if value.is_integer() else value


def run_overrides(run_dir: str | Path | None) -> list[str]:
    """The command-line overrides of the run in ``run_dir`` (Hydra's
    ``.hydra/overrides.yaml``, read as plain strings), or [] when there are none or the
    file is not a list of strings."""
    if run_dir is None:
        return []
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    try:
        import yaml

        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, yaml.YAMLError):
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) and len(v) < 1000 for v in values):
        return []
    return values[:100]
