"""What a ``claid serve`` request may hold: every body and form field parsed into a
typed value with its range, or refused with an :class:`~claid.serve.engine.ApiError`
(a 4xx and ``{"error": "<one line>"}``).

A request is a stranger's data: a JSON body may nest deeper than Python's parser
recurses, hold integers of thousands of digits or the non-JSON constants ``NaN`` and
``Infinity``; a box coordinate may be too large for a float; a form field may be any
text. Each is refused here, never turned into a 500. Image references resolve in
:func:`claid.serve.database_images.image_number` (ASCII digits or an id of the index's table).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from claid.serve.engine import ApiError

#: Largest |coordinate| of a box, in original pixels (far past any image a server decodes).
MAX_COORDINATE = 2**31
#: Longest text query, in characters.
MAX_TEXT = 1000
#: Longest image reference (an id or an index), in characters.
MAX_REF = 4096
KINDS = ("image_id", "region_id", "text")


_RANKING = {"top": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
            "k": {"type": "integer", "minimum": 1, "maximum": 100_000,
                  "description": "regions retrieved before image ranking (default: all, exact index)"}}


def _one_kind(name: str, schema: dict, box: bool) -> dict:
    extra = {"box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
                     "description": "[x1, y1, x2, y2] in the image's original pixels"}} if box else {}
    return {"type": "object", "required": [name], "additionalProperties": False,
            "properties": {name: schema, **extra, **_RANKING}}


#: The OpenAPI description of ``POST /api/search``'s two bodies (the route reads the raw request).
SEARCH_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"description": "exactly one of image_id, region_id, text", "anyOf": [
        _one_kind("image_id", {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}],
                               "description": "a database image: its dataset-relative id or its index"}, True),
        _one_kind("region_id", {"type": "integer", "minimum": 0, "description": "an index row"}, False),
        _one_kind("text", {"type": "string", "minLength": 1, "maxLength": MAX_TEXT,
                           "description": "a text query (an index built with siglip_tokens)"}, False)]}},
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {
            "image": {"type": "string", "format": "binary", "description": "the query photo"},
            "box": {"type": "string", "description": "JSON [x1, y1, x2, y2] in the photo's pixels"},
            "top": {"type": "string", "description": "JSON integer in [1, 1000]"},
            "k": {"type": "string", "description": "JSON integer in [1, 100000]"}}}}}}}
#: Every refusal's body.
ERROR_RESPONSES = {status: {"description": why, "content": {"application/json": {"schema": {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
    for status, why in ((400, "a bad request"), (404, "an unknown image or route"),
                        (413, "a body over a limit"), (503, "busy, or cannot describe queries"))}


def read_json(body: bytes | str, what: str = "the search body") -> object:
    """A JSON document, refused (400) when it is not strict JSON: malformed, not UTF-8,
    nested deeper than the parser recurses, an integer past Python's digit limit, or
    ``NaN`` / ``Infinity`` (which ``json.dumps(allow_nan=False)`` could not echo)."""

    def no_constant(name: str):
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        return json.loads(body, parse_constant=no_constant)
    except RecursionError:
        raise ApiError(400, f"malformed JSON: {what} nests too deep") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise ApiError(400, f"malformed JSON: {what}: {str(err)[:200]}") from None


def parse_box(value) -> list[float] | None:
    """``[x1, y1, x2, y2]``: four finite numbers of magnitude <= MAX_COORDINATE (the
    image's own bounds are checked later, against the decoded image), or None."""
    if value is None:
        return None
    if (isinstance(value, list) and len(value) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            and all(abs(v) <= MAX_COORDINATE for v in value)):  # int vs float: no overflow
        box = [float(v) for v in value]
        if all(math.isfinite(v) for v in box):
            return box
    raise ApiError(400, f"box must be [x1, y1, x2, y2] in original pixels, got {_short(value)}")


@dataclass(frozen=True)
class SearchQuery:
    """One parsed search: its kind, the one query value, the box, ``top`` and ``k``
    (ranges of ``top`` / ``k`` are the engine's, :meth:`SearchEngine.check_top_k`)."""

    kind: str  # image_id | region_id | text | upload
    value: object  # image reference (str / int), region id (int), text (str); None for an upload
    box: list[float] | None
    top: object
    k: object

    def echo(self) -> dict:
        """The query as the answer names it."""
        return {"kind": self.kind, **({} if self.kind == "upload" else {self.kind: self.value}),
                "box": self.box}


def parse_search(query: object, *, upload: bool) -> SearchQuery:
    """A search body (or the fields of an upload form) -> :class:`SearchQuery`."""
    if not isinstance(query, dict):
        raise ApiError(400, "the search body must be a JSON object")
    kinds = [name for name in KINDS if query.get(name) is not None] + (["upload"] if upload else [])
    if len(kinds) != 1:
        raise ApiError(400, "give exactly one of image_id, region_id, text or an uploaded image, "
                            f"got {kinds or 'none'}")
    kind = kinds[0]
    value = None if kind == "upload" else query[kind]
    if kind == "image_id" and (isinstance(value, bool) or not isinstance(value, str | int)
                               or (isinstance(value, str) and len(value) > MAX_REF)):
        raise ApiError(400, f"image_id must be an image id or index, got {_short(value)}")
    if kind == "region_id" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ApiError(400, f"region_id must be an integer, got {_short(value)}")
    if kind == "text":
        if not isinstance(value, str) or not value.strip():
            raise ApiError(400, "text must be a non-empty string")
        if len(value) > MAX_TEXT or not _encodable(value):
            raise ApiError(400, f"text must be at most {MAX_TEXT} characters of valid Unicode")
    box = parse_box(query.get("box"))
    if box is not None and kind in ("region_id", "text"):
        raise ApiError(400, f"a box goes with an image query, not with {kind}")
    return SearchQuery(kind, value, box, query.get("top", 10), query.get("k"))


def form_fields(form, names=("box", "top", "k")) -> dict:
    """The JSON-valued fields of an upload form (each parsed as :func:`read_json`)."""
    out = {}
    for name in names:
        text = form.get(name)
        if text in (None, ""):
            continue
        if not isinstance(text, str):
            raise ApiError(400, f"form field {name} must be text, not a file")
        out[name] = read_json(text, f"form field {name}")
    return out


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a lone surrogate from a \\ud800 escape
        return False


def _short(value) -> str:
    try:
        return repr(value)[:80]
    except ValueError:  # an integer past Python's digit limit for str()
        return "a value with an integer too long to print"


async def image_form(request, *, max_fields: int, max_bytes: int):
    """(the form, the bytes of its file field ``image``, at most ``max_bytes + 1`` of them:
    one more tells the caller the file is over its limit) of a multipart request; a
    malformed form or one without that file is a 400."""
    try:
        form = await request.form(max_files=1, max_fields=max_fields)
    except Exception as err:  # noqa: BLE001 - a malformed multipart body, whatever the parser raised
        raise ApiError(400, f"malformed multipart form: {' '.join(str(err).split())[:200]}") from None
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "the multipart form needs a file field 'image'")
    return form, await upload.read(max_bytes + 1)
