"""The fuzzers whose readers reach C code (pycocotools' RLE and polygon code, numpy's
memory maps) run in a child pytest process with a capped address space: a crash or an
unbounded allocation fails this test with the child's output instead of killing the
suite. Examples and seeds: tests/boundary/fuzz.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("name", ["fuzz_detector_files.py", "fuzz_store_files.py"])
def test_fuzzer_runs_clean_in_a_child_process(name):
    # one BLAS / OpenMP thread: on a many-core machine their reserved stacks alone would
    # fill the capped address space
    env = {**os.environ, "CLAID_FUZZ_SUBPROCESS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           "--hypothesis-show-statistics", str(HERE / name)],
                          capture_output=True, text=True, env=env, timeout=900,
                          cwd=HERE.parents[1])
    report = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, f"{name} exited {done.returncode} (negative: killed by a signal)\n{report}"
