"""claid serve, first slice: start-time check and /api/health through an in-process client."""

import pytest

pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from claid.artifacts import DamagedArtifactError  # noqa: E402
from claid.serve import create_app  # noqa: E402
from tests.test_integrity import _index_dir  # noqa: E402


def test_health_reports_the_index_size(tmp_path):
    client = TestClient(create_app(_index_dir(tmp_path)))
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["images"] == 4 and body["regions"] == 20


def test_a_damaged_index_dir_stops_the_server_at_start(tmp_path):
    index_dir = _index_dir(tmp_path)
    (index_dir / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(DamagedArtifactError, match="index.faiss: 7 bytes"):
        create_app(index_dir)


def test_claid_serve_refuses_a_damaged_index_dir_with_one_line(tmp_path):
    from claid.serve.cli import main

    index_dir = _index_dir(tmp_path)
    (index_dir / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(SystemExit) as info:
        main(["--index-dir", str(index_dir)])
    assert str(info.value.code).startswith("error: index dir") and "\n" not in str(info.value.code)


def test_a_run_dir_names_the_index_the_store_and_the_photos(served_run, tmp_path):
    from claid.serve.cli import main, run_dir_paths

    run_dir, settings = served_run
    paths = run_dir_paths(run_dir)
    assert paths == {"index_dir": settings["index"], "store_dir": settings["store"],
                     "image_root": settings["image_root"]}
    with pytest.raises(SystemExit) as info:
        main(["--run-dir", str(tmp_path)])
    assert "no metrics.json" in str(info.value.code)
    (tmp_path / "metrics.json").write_text('{"settings": {}}')
    with pytest.raises(SystemExit) as info:
        main(["--run-dir", str(tmp_path)])
    assert "names no index dir" in str(info.value.code)
