"""claid serve's JSON API through an in-process client: answers equal the CLI's, every bad input a 4xx."""

import io
import os
import shutil
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

import claid  # noqa: E402
from claid.serve import create_app  # noqa: E402


def _client(settings, **kwargs):
    kwargs.setdefault("store_dir", settings["store"])
    kwargs.setdefault("image_root", settings["image_root"])
    return TestClient(create_app(settings["index"], **kwargs))


@pytest.fixture(scope="module")
def client(served_run):
    return _client(served_run[1])


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _same_as_cli(body, ranking):
    assert [r["image_id"] for r in body["results"]] == ranking.images
    np.testing.assert_allclose([r["score"] for r in body["results"]], ranking.scores, rtol=1e-5)
    np.testing.assert_allclose([r["box"] for r in body["results"]], ranking.boxes, atol=1e-4)


def test_health_names_the_index_and_the_pool(client):
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["images"] == 4 and body["regions"] > 0
    assert body["text"] is False and body["workers"] == 1 and body["threads"] >= 1
    assert body["descriptor"]


@pytest.mark.parametrize("box", [None, [10, 5, 100, 90]])
def test_search_by_image_id_equals_the_cli_and_is_cached(client, served_run, box):
    settings = served_run[1]
    path = os.path.join(settings["image_root"], "a/cat.png")
    (ranking,) = claid.search([path], index_dir=settings["index"], boxes=[box], top=4)
    first = client.post("/api/search", json={"image_id": "a/cat.png", "box": box, "top": 4}).json()
    _same_as_cli(first, ranking)
    again = client.post("/api/search", json={"image_id": 0, "box": box, "top": 4}).json()
    assert again["cached"] is True and again["forward_ms"] is None
    assert again["results"] == first["results"] and first["took_ms"] > 0
    assert first["results"][0]["image_id"] == "a/cat.png" if box is None else True


def test_each_result_names_the_region_that_localised_it(client, served_run):
    from claid.store import RegionStore

    store = RegionStore.open(served_run[1]["store"])
    body = client.post("/api/search", json={"image_id": "b/rocket.png", "top": 4}).json()
    for result in body["results"]:
        region = result["region_id"]
        assert store.image_ids[store.region_image()[region]] == result["image_id"]
        np.testing.assert_allclose(store.boxes()[region], result["box"])


def test_search_by_region_id_uses_the_stored_vector(client, served_run):
    from claid.store import RegionStore

    store = RegionStore.open(served_run[1]["store"])
    region = int(store.num_regions) - 1
    body = client.post("/api/search", json={"region_id": region, "top": 2}).json()
    best = body["results"][0]
    assert best["region_id"] == region and best["score"] == pytest.approx(1.0, abs=2e-3)
    assert best["image_id"] == store.image_ids[store.region_image()[region]]
    assert client.get("/api/health").json()["descriptor_loaded"] in (True, False)


def test_an_upload_with_a_box_equals_the_cli_on_the_same_file(client, served_run):
    settings = served_run[1]
    path = os.path.join(settings["image_root"], "b/astronaut.png")
    (ranking,) = claid.search([path], index_dir=settings["index"], boxes=[(20, 10, 90, 80)], top=3)
    with open(path, "rb") as f:
        body = client.post("/api/search", files={"image": ("q.png", f, "image/png")},
                           data={"box": "[20, 10, 90, 80]", "top": "3"}).json()
    _same_as_cli(body, ranking)
    assert body["query"]["kind"] == "upload" and body["forward_ms"] > 0


def test_images_original_thumbnail_and_hierarchy(client, served_run):
    from claid.store import RegionStore

    settings = served_run[1]
    original = client.get("/api/images/" + quote("a/coffee.png", safe=""))
    assert original.status_code == 200
    assert original.content == open(os.path.join(settings["image_root"], "a/coffee.png"), "rb").read()
    thumb = client.get("/api/images/1?size=64")
    assert Image.open(io.BytesIO(thumb.content)).size == (64, 48) and thumb.headers["X-Image-Size"] == "128x96"
    store = RegionStore.open(settings["store"])
    number = store.image_index("b/rocket.png")
    body = client.get("/api/images/" + quote("b/rocket.png", safe="") + "/regions").json()
    assert body == client.get(f"/api/images/{number}/regions").json()
    regions = store.regions_of("b/rocket.png")
    assert [r["depth"] for r in body["regions"]] == regions.depth.tolist()
    first = body["regions"][0]["region_id"] if body["regions"] else 0
    for r, region in enumerate(body["regions"]):
        assert region["parent"] == (None if regions.parent[r] < 0 else first + regions.parent[r])
        runs = region["mask"]
        flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
        np.testing.assert_array_equal(flat.reshape(body["grid"]), regions.masks[r])
    assert body["height"] == 96 and body["width"] == 128


def test_a_symlinked_collection_is_served_a_file_linking_outside_is_refused(served_run, tmp_path):
    settings = served_run[1]
    linked = tmp_path / "mounted"
    linked.symlink_to(settings["image_root"], target_is_directory=True)
    client = _client(settings, image_root=linked)
    assert client.get("/api/images/0").status_code == 200
    copy = tmp_path / "copy"
    shutil.copytree(settings["image_root"], copy)
    outside = tmp_path / "secret.png"
    outside.write_bytes((copy / "a/cat.png").read_bytes())
    (copy / "a/cat.png").unlink()
    (copy / "a/cat.png").symlink_to(outside)
    client = _client(settings, image_root=copy)
    for ask in (lambda: client.get("/api/images/" + quote("a/cat.png", safe="")),
                lambda: client.post("/api/search", json={"image_id": "a/cat.png"})):
        answer = ask()
        assert answer.status_code == 403 and "outside the collection root" in answer.json()["error"]


def _bomb() -> bytes:
    return _png(Image.new("1", (10_000, 10_000)))  # 10^8 pixels, a few kB


BAD_SEARCHES = {
    "malformed JSON": (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, "malformed JSON"),
    "not an object": (dict(json=[1, 2]), 400, "JSON object"),
    "nothing to search": (dict(json={"top": 3}), 400, "exactly one"),
    "two queries": (dict(json={"image_id": 0, "region_id": 1}), 400, "exactly one"),
    "box outside": (dict(json={"image_id": 0, "box": [10, 10, 500, 60]}), 400, "outside"),
    "box inverted": (dict(json={"image_id": 0, "box": [60, 10, 20, 40]}), 400, "empty"),
    "box not four numbers": (dict(json={"image_id": 0, "box": [1, 2, 3]}), 400, "box must be"),
    "unknown image id": (dict(json={"image_id": "a/dog.png"}), 404, "unknown image"),
    "image index past the end": (dict(json={"image_id": 99}), 404, "unknown image"),
    "a relative path": (dict(json={"image_id": "../../etc/passwd"}), 404, "unknown image"),
    "an absolute path": (dict(json={"image_id": "/etc/passwd"}), 404, "unknown image"),
    "text on an image index": (dict(json={"text": "a rocket"}), 400, "no text encoder"),
    "top 0": (dict(json={"image_id": 0, "top": 0}), 400, "top must be in"),
    "top 10^9": (dict(json={"image_id": 0, "top": 10**9}), 400, "top must be in"),
    "top not an integer": (dict(json={"image_id": 0, "top": "5"}), 400, "top must be an integer"),
    "k 0": (dict(json={"image_id": 0, "k": 0}), 400, "k must be in"),
    "region id out of range": (dict(json={"region_id": 10**6}), 400, "region_id must be in"),
    "region id with a box": (dict(json={"region_id": 0, "box": [0, 0, 5, 5]}), 400, "a box goes"),
    "upload not an image": (dict(files={"image": ("x.png", b"GIF89 nope", "image/png")}), 400, "not an image"),
    "upload a decompression bomb": (dict(files={"image": ("b.png", _bomb(), "image/png")}), 413, "pixels"),
    "upload empty": (dict(files={"image": ("e.png", b"", "image/png")}), 400, "empty"),
    "upload without its file": (dict(data={"box": "[0, 0, 4, 4]"}, files={"other": ("x", b"x")}), 400, "'image'"),
    "upload box outside": (dict(files={"image": ("q.png", _png(Image.new("RGB", (40, 30))), "image/png")},
                                data={"box": "[0, 0, 41, 30]"}), 400, "outside"),
}


@pytest.mark.parametrize("name", list(BAD_SEARCHES))
def test_a_bad_search_gets_a_one_line_4xx_and_the_server_keeps_serving(client, name):
    request, status, message = BAD_SEARCHES[name]
    answer = client.post("/api/search", **request)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert message in error and "\n" not in error and "/tmp" not in error
    assert client.get("/api/health").status_code == 200


def test_an_upload_over_the_byte_limit_is_refused_before_decoding(served_run):
    client = _client(served_run[1], max_upload_bytes=1000)
    picture = _png(Image.effect_noise((64, 64), 50).convert("RGB"))
    assert len(picture) > 1000
    answer = client.post("/api/search", files={"image": ("n.png", picture, "image/png")})
    assert answer.status_code == 413 and "over this server's limit of 1000" in answer.json()["error"]


@pytest.mark.parametrize("url, status, message", [
    ("/api/images/a%2Fdog.png", 404, "unknown image"),
    ("/api/images/99", 404, "unknown image"),
    ("/api/images/..%2F..%2Fetc%2Fpasswd", 404, "unknown image"),
    ("/api/images/%2Fetc%2Fpasswd", 404, "unknown image"),
    ("/api/images/a/cat.png", 404, "percent-encode"),
    ("/api/images/0/masks", 404, "percent-encode"),
    ("/api/images/0?size=0", 400, "size must be"),
    ("/api/images/0?size=99999", 400, "size must be"),
    ("/api/images/0?size=big", 422, "size"),
    ("/api/images?limit=0", 400, "limit"),
    ("/api/nothing", 404, "Not Found"),
])
def test_a_bad_image_request_gets_a_one_line_4xx(client, url, status, message):
    answer = client.get(url)
    assert answer.status_code == status and message in answer.json()["error"]
    assert "\n" not in answer.json()["error"]


def test_without_a_store_or_root_the_api_says_what_to_pass(served_run):
    client = TestClient(create_app(served_run[1]["index"]))
    for answer, message in [(client.get("/api/images/0"), "--images"),
                            (client.get("/api/images/0/regions"), "--store"),
                            (client.post("/api/search", json={"region_id": 0}), "--store")]:
        assert answer.status_code in (400, 404) and message in answer.json()["error"]


def test_the_listing_and_the_page_and_the_openapi_page(client):
    listing = client.get("/api/images?limit=2").json()
    assert listing["total"] == 4 and [i["index"] for i in listing["images"]] == [0, 1]
    assert client.get("/").status_code == 200 and "claid" in client.get("/").text
    assert client.get("/docs").status_code == 200
    # answered by the JsonSearch middleware, still documented by the route
    assert "post" in client.get("/openapi.json").json()["paths"]["/api/search"]


def test_search_with_k_regions_equals_the_cli_with_k(client, served_run):
    """The k-region path (ranked over the found regions' own tables) equals the CLI."""
    from claid.store import RegionStore

    settings = served_run[1]
    store = RegionStore.open(settings["store"])
    path = os.path.join(settings["image_root"], "a/cat.png")
    for k in (1, 3, 50):
        (ranking,) = claid.search([path], index_dir=settings["index"], top=4, k=k)
        body = client.post("/api/search", json={"image_id": "a/cat.png", "top": 4, "k": k}).json()
        _same_as_cli(body, ranking)
        assert body["k"] == k and len(body["results"]) <= min(k, 4)
        for result in body["results"]:
            assert store.image_ids[store.region_image()[result["region_id"]]] == result["image_id"]


def test_region_vector_is_the_stored_row(client, served_run):
    from claid.store import RegionStore

    store = RegionStore.open(served_run[1]["store"])
    everything = store.vectors(np.float32)
    for region in (0, int(store.num_regions) // 2, int(store.num_regions) - 1):
        np.testing.assert_array_equal(store.vector(region).astype(np.float32), everything[region])
    with pytest.raises(IndexError):
        store.vector(int(store.num_regions))
