"""run.py as a user runs it: a missing dataset ends with the loader's message, no traceback."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_missing_dataset_exits_with_a_message_not_a_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "run.py", "dataset=instre", f"dataset.root={tmp_path}/absent",
         "tracking=none", f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode != 0
    assert "Expected layout" in done.stderr and "gnd_instre.mat" in done.stderr
    assert "Traceback" not in done.stderr
