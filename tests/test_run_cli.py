"""run.py as a user runs it: a missing dataset ends with the loader's message, no traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = ROOT = Path(__file__).resolve().parents[1]


def test_missing_dataset_exits_with_a_message_not_a_traceback(tmp_path):
    done = subprocess.run(
        # random weights: on a machine without them, the (earlier) weights check would answer first
        [sys.executable, "run.py", "dataset=instre", f"dataset.root={tmp_path}/absent",
         "backbone.pretrained=false", "descriptor.pretrained=false",
         "tracking=none", f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode != 0
    assert "Expected layout" in done.stderr and "gnd_instre.mat" in done.stderr
    assert "Traceback" not in done.stderr


def test_search_cli_reports_user_errors_without_a_traceback(tmp_path, monkeypatch):
    import pytest

    from claid.__main__ import main

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    for args, message in [
        (["--index-dir", str(tmp_path / "absent"), str(broken)], "not a claid index dir"),
        (["--index-dir", str(tmp_path)], "required"),  # argparse: exit code 2
        (["--index-dir", str(tmp_path), str(broken), "--text", "a cat"], "required"),
        (["--index-dir", str(tmp_path), "--text", "a cat", "--box", "0", "0", "5", "5"], "required"),
        (["--index-dir", str(tmp_path), str(broken), "--top", "0"], "required"),
        (["--index-dir", str(tmp_path), "--text", "a cat"], "not a claid index dir"),
    ]:
        monkeypatch.setattr(sys, "argv", ["claid", "search", *args])
        with pytest.raises(SystemExit) as info:
            main()
        if message == "required":  # refused by the argument parser
            assert info.value.code == 2
        else:
            assert str(info.value.code).startswith("error: ") and message in str(info.value.code)


def test_bad_setting_is_one_line_naming_the_full_key(tmp_path):
    done = subprocess.run(
        [sys.executable, "run.py", "engine.batch_size=0", "tracking=none",
         f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == "error: engine.batch_size must be >= 1 (got 0)"
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "outputs" / "cache").exists()  # refused before any stage ran


def test_damaged_artifacts_and_a_full_disk_are_user_errors():
    import importlib.util

    from claid.artifacts import DamagedArtifactError, DiskFullError
    from claid.config.rules import SettingsError

    spec = importlib.util.spec_from_file_location("run_entry", REPO / "run.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    for error in (SettingsError, DamagedArtifactError, DiskFullError):
        assert issubclass(error, entry.USER_ERRORS), error


@pytest.mark.slow
def test_a_run_ends_by_saying_where_everything_went_without_library_noise(tmp_path):
    """The last lines name the run dir, the region store, the index dir, the MLflow run
    with the command that opens it, and the serve command; no FAISS loader lines,
    Lightning tips or deprecation warnings on a plain run."""
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "backbone=dino_vits16", "backbone.pretrained=false",
         "descriptor.pretrained=false", "dataset.n_scenes=12", "dataset.n_queries=6",
         "dataset.image_size=[96,128]", f"hydra.run.dir={tmp_path}/run", "engine.threads=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    tail = done.stdout.strip().splitlines()[-6:]
    assert tail[0] == f"run dir:       {tmp_path / 'run'}"
    assert tail[1] == f"region store:  {report['settings']['store']}"
    assert tail[2] == f"index dir:     {report['settings']['index']}"
    assert tail[3].startswith("MLflow run:    ") and "mlflow ui --backend-store-uri sqlite:///" in tail[4]
    run_id = tail[3].split()[2]
    assert tail[4].endswith(f"/runs/{run_id}")
    assert tail[5] == f"search it:     claid serve --run-dir {tmp_path / 'run'}"
    noise = done.stdout + done.stderr
    for word in ("faiss.loader", "Tip:", "LeafSpec", "GPU available", "Creating initial MLflow database"):
        assert word not in noise, word
