"""``claid serve``: the command line of :func:`claid.serve.create_app`.

    claid serve --run-dir outputs/runs/<date>/<time> [--run-dir <another run dir>]
    claid serve --index-dir outputs/cache/index-ab12 --store outputs/cache/regions-cd34 \\
        --images data/photos
    claid serve --run-dir R --queries data/photos/queries.jsonl   # edit a query set

``--run-dir`` finds the index dir, region store and collection root in the run's
metrics.json (``settings.index``, ``settings.store``, ``settings.image_root``); a
second ``--run-dir`` is a run to compare with (the search uses the first run's index).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def run_dir_paths(run_dir: str | Path) -> dict:
    """index dir, store and image root a run dir's metrics.json names (one-line errors)."""
    path = Path(run_dir) / "metrics.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{run_dir} is not a run dir (no metrics.json); pass a folder run.py wrote") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    settings = report.get("settings") if isinstance(report, dict) else None
    if not isinstance(settings, dict) or not isinstance(settings.get("index"), str):
        raise ValueError(f"{path} names no index dir (settings.index): the run indexed nothing to search")
    return {"index_dir": settings["index"], "store_dir": settings.get("store"),
            "image_root": settings.get("image_root")}


def main(argv=None) -> None:
    from claid.artifacts import DamagedArtifactError
    from claid.config.registered import RecordedDescriptorError

    parser = argparse.ArgumentParser(
        prog="claid serve", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Instance search in the browser over a run's index: the page at /, its JSON\n"
                    "API (documented at /docs, offline), the run explorer, and with --queries an\n"
                    "editor of the collection's queries.jsonl.",
        epilog="examples:\n" + __doc__.split("\n\n")[1])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--run-dir", action="append", help="a run dir (twice: two runs to compare)")
    where.add_argument("--index-dir", help="an index dir written by run.py")
    parser.add_argument("--store", help="the region store (default: the run's)")
    parser.add_argument("--images", help="the collection root (default: the run's)")
    parser.add_argument("--queries", metavar="FILE",
                        help="a queries.jsonl the page edits (draw boxes, mark positives); "
                             "without it the server is read-only")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="network forwards at once (default 1)")
    parser.add_argument("--threads", default="auto", help="torch/BLAS/FAISS threads (engine.threads rule)")
    parser.add_argument("--access-log", action="store_true",
                        help="log every request (off by default: it costs a tenth of a fast search)")
    args = parser.parse_args(argv)
    if args.run_dir and len(args.run_dir) > 2:
        parser.error("give one or two --run-dir")
    try:
        paths = ({"index_dir": args.index_dir, "store_dir": None, "image_root": None}
                 if args.index_dir else run_dir_paths(args.run_dir[0]))
        from claid.serve.app import create_app
        from claid.serve.query_editor import run_overrides

        threads = int(args.threads) if str(args.threads).isdigit() else args.threads
        run_dirs = list(args.run_dir or ())
        if run_dirs and args.queries and not (Path(run_dirs[0]) / "queries.json").is_file():
            # a run that only indexed (no queries yet): its index, store and photos, no explorer
            print(f"{run_dirs[0]} searched no queries: the run explorer is off; the search page and "
                  "the query editor work", flush=True)
            run_dirs = run_dirs[1:]
        app = create_app(paths["index_dir"], store_dir=args.store or paths["store_dir"],
                         image_root=args.images or paths["image_root"], run_dirs=run_dirs,
                         command_overrides=run_overrides(args.run_dir[0]) if args.run_dir else (),
                         workers=args.workers, threads=threads, queries_file=args.queries)
        # built now: a record or weights the server cannot use stop it here, in one line,
        # instead of answering every image query with an error
        app.state.engine.descriptor()
    except (DamagedArtifactError, RecordedDescriptorError, OSError, ValueError) as err:
        sys.exit(f"error: {err}")
    import uvicorn

    from claid.serve.engine import cap_malloc_arenas

    cap_malloc_arenas()  # resident memory stays flat under a thread pool (bench_serve)
    # bound to 127.0.0.1 by default and never behind a proxy it would trust: no
    # proxy-header rewriting (one middleware less per request)
    uvicorn.run(app, host=args.host, port=args.port, access_log=args.access_log, proxy_headers=False)
