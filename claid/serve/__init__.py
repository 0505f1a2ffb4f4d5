"""``claid serve``: instance search over an index dir through a JSON API and a page (issue 17).

    engine.py   SearchEngine: memory-mapped index + store, lazy descriptor, bounded forward pool
    files.py    database images (ids through the index's table only), hierarchies, uploads
    app.py      create_app: the FastAPI routes (/api/health, /api/search, /api/images/...)
    cli.py      python -m claid serve --run-dir R | --index-dir D
    static/     the page at / (plain HTML + JS, nothing fetched from the network)
"""

from claid.serve.app import create_app

__all__ = ["create_app"]
