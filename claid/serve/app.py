"""The FastAPI app over one index dir.

At start the index dir gets the same structural check ``python -m claid search`` makes
(sizes, no checksums: ``claid verify`` stays the full check), so a damaged or missing
index dir stops the server with that one-line error instead of failing per request.
"""

from __future__ import annotations

from pathlib import Path


def create_app(index_dir: str | Path):
    """A FastAPI app serving ``index_dir`` (checked now; raises its one-line error)."""
    from fastapi import FastAPI

    from claid.retrieval import _checked_meta

    meta = _checked_meta(index_dir)
    from claid.index import RegionIndex

    index = RegionIndex.load(index_dir, mmap=True)  # a flat index stays in its file
    image_ids = list(meta.get("image_ids", []))
    descriptor = meta.get("descriptor")
    app = FastAPI(title="claid serve")

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "images": len(image_ids),
                "regions": int(index.ntotal),
                "descriptor": descriptor}

    return app


def main(argv=None) -> None:
    """``python -m claid serve --index-dir D [--host 127.0.0.1] [--port 8000]``."""
    import argparse
    import sys

    from claid.artifacts import DamagedArtifactError

    parser = argparse.ArgumentParser(prog="python -m claid serve")
    parser.add_argument("--index-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        app = create_app(args.index_dir)
    except (DamagedArtifactError, OSError, ValueError) as err:
        sys.exit(f"error: {err}")
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port)
