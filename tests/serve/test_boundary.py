"""claid serve's boundary: hostile bodies, form fields and path ids get a one-line JSON 4xx,
never a 500; an index dir whose descriptor record cannot be used stops the server at start."""

import io
import json
import shutil
from urllib.parse import quote

import pytest
from PIL import Image

pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from claid.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def client(served_run):
    settings = served_run[1]
    app = create_app(settings["index"], store_dir=settings["store"], image_root=settings["image_root"])
    return TestClient(app, raise_server_exceptions=False)


def _png(size=(40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (120, 60, 30)).save(out, format="PNG")
    return out.getvalue()


def _deep(depth: int) -> bytes:
    return b'{"image_id": 0, "box": ' + b"[" * depth + b"]" * depth + b"}"


HUGE = "9" * 400  # float() of it overflows
LONGER = "9" * 5000  # past Python's int digit limit for json.loads


JSON_BODIES = {
    "nested 30,000 deep": (_deep(30_000), "nests too deep"),
    "a 400-digit box coordinate": (f'{{"image_id": 0, "box": [0, 0, {HUGE}, 5]}}'.encode(), "box must be"),
    "a 5000-digit integer": (f'{{"image_id": 0, "top": {LONGER}}}'.encode(), "malformed JSON"),
    "a 400-digit top": (f'{{"image_id": 0, "top": {HUGE}}}'.encode(), "top must be in"),
    "a 400-digit region id": (f'{{"region_id": {HUGE}}}'.encode(), "region_id must be in"),
    "a 400-digit image index": (f'{{"image_id": {HUGE}}}'.encode(), "unknown image"),
    "NaN in a box": (b'{"image_id": 0, "box": [0, 0, NaN, 5]}', "malformed JSON"),
    "Infinity in a box": (b'{"image_id": 0, "box": [0, 0, Infinity, 5]}', "malformed JSON"),
    "1e400 in a box": (b'{"image_id": 0, "box": [0, 0, 1e400, 5]}', "box must be"),
    "superscript digit id": ('{"image_id": "\u00b2"}'.encode(), "unknown image"),
    "Arabic-Indic digit id": ('{"image_id": "\u0661\u0662"}'.encode(), "unknown image"),
    "a lone surrogate text": (b'{"text": "\\ud800"}', "text must be"),
    "a region id of 1.5": (b'{"region_id": 1.5}', "region_id must be an integer"),
    "an image id of a list": (b'{"image_id": [0]}', "image_id must be"),
}


@pytest.mark.parametrize("name", list(JSON_BODIES))
def test_a_hostile_json_search_is_a_one_line_4xx(client, name):
    body, words = JSON_BODIES[name]
    assert len(body) < 64 * 1024
    answer = client.post("/api/search", content=body, headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:200])
    error = answer.json()["error"]
    assert words in error and "\n" not in error
    assert client.get("/api/health").status_code == 200


FORM_FIELDS = {
    "box nested 30,000 deep": ({"box": "[" * 30_000 + "]" * 30_000}, "nests too deep"),
    "a 400-digit box coordinate": ({"box": f"[0, 0, {HUGE}, 5]"}, "box must be"),
    "a 5000-digit top": ({"top": LONGER}, "malformed JSON"),
    "top Infinity": ({"top": "Infinity"}, "malformed JSON"),
    "k 1e400": ({"k": "1e400"}, "k must be an integer"),
    "box not JSON": ({"box": "[0, 0,"}, "malformed JSON"),
}


@pytest.mark.parametrize("name", list(FORM_FIELDS))
def test_a_hostile_upload_form_field_is_a_one_line_4xx(client, name):
    fields, words = FORM_FIELDS[name]
    answer = client.post("/api/search", files={"image": ("q.png", _png(), "image/png")}, data=fields)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:200])
    error = answer.json()["error"]
    assert words in error and "\n" not in error


@pytest.mark.parametrize("ref", ["\u00b2", "\u0661\u0662", "\u2460", "9" * 5000, "0" * 30 + "1"])
def test_an_image_path_id_that_is_not_ascii_digits_is_a_404(client, ref):
    for suffix in ("", "/regions", "?size=8"):
        answer = client.get("/api/images/" + quote(ref, safe="") + suffix)
        assert answer.status_code == 404, (ref[:10], suffix, answer.text[:200])
        assert "unknown image" in answer.json()["error"]


def test_an_image_index_with_leading_zeros_still_resolves(client):
    assert client.get("/api/images/001/regions").json()["image_index"] == 1


def _index_copy(served_run, tmp_path, change) -> str:
    index = tmp_path / "index"
    shutil.copytree(served_run[1]["index"], index)
    meta = json.loads((index / "search.json").read_text())
    change(meta["descriptor"])
    (index / "search.json").write_text(json.dumps(meta))
    return str(index)


def _unknown_name(record):
    record["name"] = "not_a_descriptor"


def _weights_not_cached(record):
    record["settings"].update(pretrained=True, model_name="resnet50.not_cached")


def test_an_unusable_descriptor_record_stops_the_server_at_start(served_run, tmp_path, capsys):
    from claid.config.registered import RecordedDescriptorError
    from claid.serve.cli import main

    index = _index_copy(served_run, tmp_path, _unknown_name)
    with pytest.raises(RecordedDescriptorError, match="not_a_descriptor"):
        create_app(index)
    with pytest.raises(SystemExit) as stop:
        main(["--index-dir", index, "--port", "1"])
    message = str(stop.value.code)
    assert message.startswith("error: ") and "not_a_descriptor" in message and "\n" not in message


def test_a_descriptor_that_cannot_be_built_stops_the_cli_and_is_a_503_in_python(served_run, tmp_path):
    from claid.serve.cli import main

    index = _index_copy(served_run, tmp_path, _weights_not_cached)
    with pytest.raises(SystemExit) as stop:
        main(["--index-dir", index, "--port", "1"])
    message = str(stop.value.code)
    assert message.startswith("error: ") and "resnet50.not_cached" in message and "\n" not in message
    client = TestClient(create_app(index), raise_server_exceptions=False)
    answer = client.post("/api/search", files={"image": ("q.png", _png(), "image/png")})
    assert answer.status_code == 503 and "cannot describe queries" in answer.json()["error"]
    assert client.get("/api/health").status_code == 200
