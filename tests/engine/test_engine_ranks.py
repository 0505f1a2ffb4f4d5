"""claid.engine.ranks: who is global rank 0 under each launcher, and what a rank
that Lightning relaunches runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from claid.engine.ranks import (
    JOB_VARIABLE,
    is_global_zero,
    is_lone_process,
    launcher_state_restored,
    rank_argv,
    remember_job,
    world_size_from_env,
)


@pytest.mark.parametrize("environ, zero", [
    ({}, True),                                                   # a plain run
    ({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "4"}, True),  # torchrun, first rank
    ({"RANK": "2", "LOCAL_RANK": "0", "GROUP_RANK": "1"}, False),  # torchrun, second node
    ({"LOCAL_RANK": "1", "NODE_RANK": "0"}, False),                # Lightning's relaunched rank
    ({"NODE_RANK": "1"}, False),                                   # free cluster, second node
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, True),            # srun, first task
    ({"SLURM_PROCID": "3", "SLURM_NTASKS": "4"}, False),
    ({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}, False),             # relaunched inside one task
])
def test_global_rank_zero_under_each_launcher(environ, zero):
    assert is_global_zero(environ) is zero


def test_an_unreadable_rank_variable_is_named():
    with pytest.raises(ValueError, match="RANK='first'"):
        is_global_zero({"RANK": "first"})


def test_world_size_from_an_external_launcher_only():
    assert world_size_from_env({}) == 1
    assert world_size_from_env({"WORLD_SIZE": "8", "SLURM_NTASKS": "2"}) == 8
    assert world_size_from_env({"SLURM_NTASKS": "2"}) == 2


@pytest.mark.parametrize("environ, alone", [
    ({}, True),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, True),   # one SLURM task: starts its own ranks
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, False),
    ({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, False),  # torchrun
    ({"NODE_RANK": "0", "MASTER_ADDR": "head"}, False),   # first node of a free cluster
    ({"LOCAL_RANK": "1"}, False),                          # relaunched by Lightning
])
def test_a_lone_process_decides_alone(environ, alone):
    assert is_lone_process(environ) is alone


def test_a_relaunched_rank_runs_its_parents_job_not_the_command_line(monkeypatch):
    monkeypatch.delenv(JOB_VARIABLE, raising=False)
    remember_job(["cutter.tau2=0.2", "hydra.mode=RUN", "hydra.run.dir='/o/1'"])
    environ = {**os.environ, "LOCAL_RANK": "1"}
    argv = ["run.py", "-m", "cutter.tau2=0.1,0.2", "hydra.run.dir=x"]
    assert rank_argv(argv, environ, parent_pid=os.getpid()) == [
        "run.py", "cutter.tau2=0.2", "hydra.mode=RUN", "hydra.run.dir='/o/1'",
        "hydra.job.name=rank_1", "hydra.output_subdir=null"]
    # a job recorded by another process (an ancestor's, inherited) is not ours
    assert rank_argv(argv, environ, parent_pid=os.getpid() + 1) == argv
    # the user's own process (no LOCAL_RANK) keeps its command line
    assert rank_argv(argv, dict(os.environ), parent_pid=os.getpid()) == argv
    with pytest.raises(ValueError, match=JOB_VARIABLE):
        rank_argv(argv, {JOB_VARIABLE: "{not json", "LOCAL_RANK": "1"})


def test_the_launching_process_forgets_its_ranks_after_extraction(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    with launcher_state_restored():  # what Lightning's launcher writes into its own process
        os.environ.update({"LOCAL_RANK": "0", "NODE_RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "1"})
        torch.set_num_threads(1)
    assert not {"LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT"} & set(os.environ)
    assert torch.get_num_threads() == threads
    assert is_global_zero() and world_size_from_env() == 1  # the next job relaunches its ranks


def test_an_externally_launched_rank_keeps_its_launchers_state(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with launcher_state_restored():
        os.environ["MASTER_PORT"] = "1234"
    assert os.environ["MASTER_PORT"] == "1234" and os.environ["WORLD_SIZE"] == "2"


REPO = Path(__file__).resolve().parents[2]

APP = '''
import json, sys
import hydra
from hydra.core.hydra_config import HydraConfig
from claid.engine.ranks import hydra_job_args

@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg):
    print("JOB " + json.dumps({"cfg": dict(cfg), "dir": HydraConfig.get().runtime.output_dir,
                               "mode": str(HydraConfig.get().mode),
                               "args": hydra_job_args(sys.argv[1:])}), flush=True)

main()
'''


def _jobs(app, args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's claid
    done = subprocess.run([sys.executable, str(app), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return [json.loads(line[4:]) for line in done.stdout.splitlines() if line.startswith("JOB ")]


def test_job_args_rerun_exactly_one_job_of_a_sweep_in_its_output_dir(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    sweep_dir = tmp_path / "it's a=sweep, here"  # characters Hydra's grammar would split on
    jobs = _jobs(app, ["-m", "+a=1,2", "+b=x y", "hydra.job.chdir=false",
                       f"hydra.sweep.dir='{str(sweep_dir).replace(chr(39), chr(92) + chr(39))}'"],
                 tmp_path)
    assert [job["cfg"]["a"] for job in jobs] == [1, 2]
    second = jobs[1]
    (rerun,) = _jobs(app, second["args"], tmp_path)  # one job, not the sweep
    assert rerun["cfg"] == second["cfg"] == {"a": 2, "b": "x y"}
    assert rerun["dir"] == second["dir"] == str(sweep_dir / "1")
    assert rerun["mode"] == "RunMode.RUN"
