"""The query editor offers the command that evaluates the collection as the served run
described it (its own overrides), and a photo the editor uploaded is a query photo only."""

import json

from PIL import Image

from claid.serve.query_editor import QuerySet, run_overrides


def test_the_offered_command_carries_the_runs_overrides_but_not_its_dataset(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(
        "- dataset=manifest\n- dataset.root=/old/photos\n- backbone=dino_vits16\n"
        "- backbone.pretrained=false\n- descriptor.pretrained=false\n- hydra.run.dir=/x\n")
    overrides = run_overrides(run)
    editor = QuerySet(tmp_path / "photos" / "queries.jsonl", tmp_path / "photos", engine=None,
                      run_overrides=overrides)
    command = editor.command()
    assert command.startswith(f"python run.py dataset=manifest dataset.root={tmp_path / 'photos'} "
                              "dataset.queries_file=queries.jsonl")
    assert command.endswith("backbone=dino_vits16 backbone.pretrained=false descriptor.pretrained=false")
    assert "/old/photos" not in command and "hydra" not in command


def test_a_missing_or_strange_overrides_file_gives_none(tmp_path):
    assert run_overrides(None) == [] and run_overrides(tmp_path) == []
    (tmp_path / ".hydra").mkdir()
    for text in ("{a: 1}", "- [nested]\n", "!!python/object:os.system x", "[" * 5000):
        (tmp_path / ".hydra" / "overrides.yaml").write_text(text)
        assert run_overrides(tmp_path) == []


def test_an_uploaded_query_photo_is_not_counted_as_a_photo_of_the_collection(tmp_path, caplog):
    from claid.datasets.manifest import load_manifest

    root = tmp_path / "photos"
    (root / "queries").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (32, 24), (10, 200, 30)).save(root / name)
    upload = "queries/" + "ab" * 16 + ".jpg"
    Image.new("RGB", (32, 24), (200, 10, 30)).save(root / upload)
    lines = [{"image": upload, "positives": ["b.jpg"]}, {"image": "a.jpg", "positives": ["c.jpg"]}]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    with caplog.at_level("INFO"):
        bench = load_manifest(root)
    assert sorted(bench.database) == ["b.jpg", "c.jpg"]
    assert bench.protocol["query_images_removed_from_database"] == 1  # a.jpg; the upload never was one
    assert "1 of 3 photos are query images" in caplog.text and upload not in caplog.text


def test_serve_edits_the_queries_of_a_run_that_only_indexed(served_run, tmp_path, monkeypatch, capsys):
    """The tutorial's path: index a folder (no queries yet), then `claid serve --run-dir R
    --queries FILE`: the search page and the editor work, the run explorer is off."""
    import uvicorn
    from fastapi.testclient import TestClient

    from claid.serve import cli

    run_dir, settings = served_run
    assert not (run_dir / "queries.json").exists()
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.update(app=app, **kwargs))
    queries = tmp_path / "queries.jsonl"
    cli.main(["--run-dir", str(run_dir), "--queries", str(queries)])
    assert "the run explorer is off" in capsys.readouterr().out
    client = TestClient(started["app"])
    assert client.get("/api/queries").status_code == 200
    assert client.get("/api/images").json()["images"]
