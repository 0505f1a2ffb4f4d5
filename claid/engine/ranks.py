"""Which process of a distributed extraction this is, and what a relaunched rank runs.

Extraction runs on every rank; everything after it (index, queries, search,
evaluation, figures, MLflow) runs once, on global rank 0, after every rank has
committed its shards. Launchers tell a process its rank through the environment:

==============================  ===================================================
torchrun / torch.distributed    ``RANK`` (global), ``LOCAL_RANK``, ``GROUP_RANK``
SLURM (``srun``)                ``SLURM_PROCID`` (global) and ``SLURM_NTASKS``
Lightning's own DDP launcher    the process the user started is rank 0 and has none
                                of these until its Trainer starts; the processes it
                                starts for the other devices get ``LOCAL_RANK`` and
                                ``NODE_RANK`` (and ``NODE_RANK`` on every node of a
                                free cluster)
``ddp_spawn``                   the user's process starts the ranks, waits for them
                                and goes on as rank 0
==============================  ===================================================

So a process is global rank 0 exactly when none of these variables names another
rank, which :func:`is_global_zero` reads *before* extraction (the MLflow run is
opened before it).

Lightning starts ranks 1.. of a node by re-running the user's command line
(``lightning_fabric``'s ``_hydra_subprocess_cmd``: ``sys.argv`` plus a run dir), so
under ``-m`` every relaunched rank would run the whole sweep again, each job with
its own index, search and MLflow run. The parent records the command line of the
one job it is running (:func:`remember_job`); :func:`rank_argv` turns a relaunched
child's command line into that job's (``run.py`` calls it before Hydra parses).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

__all__ = ["JOB_VARIABLE", "is_global_zero", "world_size_from_env", "is_lone_process",
           "launcher_state_restored",
           "hydra_job_args", "remember_job", "rank_argv"]

#: Environment variable through which a process tells the ranks it relaunches its job.
JOB_VARIABLE = "CLAID_RANK_JOB"

# Variables that name a rank other than 0 when set to anything but 0. SLURM sets
# SLURM_PROCID in every job, so only SLURM_NTASKS > 1 says that srun started ranks.
_TORCH_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
_RANK_VARIABLES = (*_TORCH_RANK_VARIABLES, "SLURM_PROCID")
# What Lightning's launchers write into the launching process's own environment.
_LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE",
                       "OMP_NUM_THREADS")
# Hydra overrides a relaunched rank must not take over: it runs one job, in the
# parent job's output dir, without a sweep.
_DROPPED_HYDRA_KEYS = ("hydra.mode", "hydra.run.", "hydra.sweep.", "hydra.sweeper", "hydra/sweeper",
                       "hydra.launcher", "hydra/launcher", "hydra.job.name", "hydra.output_subdir")
# Command-line flags of a Hydra app that choose the config (kept with their value).
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _rank_value(environ: Mapping[str, str], name: str) -> int:
    value = environ.get(name, "0").strip() or "0"
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not a rank (an integer)") from None


def is_global_zero(environ: Mapping[str, str] | None = None) -> bool:
    """True when this process is (or will become) global rank 0 of its job.

    Reads ``RANK``, ``LOCAL_RANK``, ``NODE_RANK``, ``GROUP_RANK`` and
    ``SLURM_PROCID``: global rank 0 has each of them unset or 0 under every
    launcher, every other rank has at least one above 0. A plain single-process
    run has none of them and is rank 0.
    """
    environ = _env(environ)
    return all(_rank_value(environ, name) == 0 for name in _RANK_VARIABLES)


def world_size_from_env(environ: Mapping[str, str] | None = None) -> int:
    """How many ranks an external launcher started (``WORLD_SIZE``, else ``SLURM_NTASKS``
    under SLURM), 1 when none did. Lightning's own launcher sets ``WORLD_SIZE`` only
    once its Trainer starts, so the user's process reads 1 before extraction."""
    environ = _env(environ)
    for name in ("WORLD_SIZE", "SLURM_NTASKS"):
        if environ.get(name, "").strip():
            return max(1, _rank_value(environ, name))
    return 1


def is_lone_process(environ: Mapping[str, str] | None = None) -> bool:
    """True when no launcher started other ranks beside this process: no rank
    variable is set and the launcher's world size is 1. Such a process may still
    start ranks of its own (Lightning's DDP relaunch, ``ddp_spawn``), and alone
    decides whether they are needed."""
    environ = _env(environ)
    return (not any(name in environ for name in _TORCH_RANK_VARIABLES)
            and world_size_from_env(environ) == 1)


@contextmanager
def launcher_state_restored() -> Iterator[None]:
    """Around an extraction: afterwards, a process that started its own ranks
    (Lightning's DDP relaunch or ``ddp_spawn``) leaves no trace of them.

    Lightning's launcher writes ``LOCAL_RANK``, ``NODE_RANK``, ``WORLD_SIZE``,
    ``MASTER_*`` (and ``OMP_NUM_THREADS``, lowering torch's thread count) into the
    launching process and keeps its process group. In the next job of a multirun that
    process would then believe its ranks were started externally and wait for ranks
    that have exited. A process started by an external launcher (torchrun, SLURM, a
    relaunched child) keeps its state: its launcher owns it.
    """
    import torch

    before = {name: os.environ.get(name) for name in _LAUNCHER_VARIABLES}
    started_externally = not is_lone_process()
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if not started_externally:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            torch.set_num_threads(threads)


def _quoted(value: str) -> str:
    """``value`` as a Hydra override value that survives ``=``, ``,`` and spaces."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _config_flags(argv: Sequence[str]) -> list[str]:
    flags, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in _CONFIG_FLAGS:
            if "=" in arg or i + 1 >= len(argv):
                flags.append(arg)
            else:
                flags += [arg, argv[i + 1]]
                i += 1
        i += 1
    return flags


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def hydra_job_args(argv: Sequence[str]) -> list[str]:
    """The command-line arguments that run exactly the current Hydra job, once.

    Args:
        argv: the process's arguments without the program (``sys.argv[1:]``): only
            the flags that choose the config are taken from it.
    Returns:
        The config flags, the job's own overrides (one value of each swept key), its
        Hydra overrides but the sweep's, ``hydra.mode=RUN`` and ``hydra.run.dir`` set
        to the job's output dir.
    """
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    kept = [o for o in hydra_cfg.overrides.hydra
            if not _override_key(o).startswith(_DROPPED_HYDRA_KEYS)]
    return [*_config_flags(argv), *hydra_cfg.overrides.task, *kept, "hydra.mode=RUN",
            f"hydra.run.dir={_quoted(hydra_cfg.runtime.output_dir)}"]


def remember_job(args: Sequence[str]) -> None:
    """Record ``args`` (see :func:`hydra_job_args`) as what the ranks this process
    relaunches must run, keyed by this process's id so only its own children use it."""
    os.environ[JOB_VARIABLE] = json.dumps({"pid": os.getpid(), "args": list(args)})


def rank_argv(argv: Sequence[str], environ: Mapping[str, str] | None = None,
              parent_pid: int | None = None) -> list[str]:
    """``argv`` for this process: unchanged, except in a rank Lightning relaunched
    from a process that called :func:`remember_job`, which gets that job's arguments
    (so a multirun's sweep is not run again by every rank).

    Args:
        argv: ``sys.argv``.
        environ, parent_pid: the environment and the parent process id (default: this
            process's).
    Raises:
        ValueError: the recorded job is not readable (one line naming the variable).
    """
    environ = _env(environ)
    recorded = environ.get(JOB_VARIABLE)
    if not recorded or "LOCAL_RANK" not in environ:
        return list(argv)
    try:
        job = json.loads(recorded)
        pid, args = int(job["pid"]), [str(a) for a in job["args"]]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"environment variable {JOB_VARIABLE} is not a recorded job: {err}") from None
    if pid != (os.getppid() if parent_pid is None else parent_pid):
        return list(argv)  # inherited from an unrelated ancestor: not our parent's job
    local_rank = _rank_value(environ, "LOCAL_RANK")
    return [argv[0], *args, f"hydra.job.name=rank_{local_rank}", "hydra.output_subdir=null"]
