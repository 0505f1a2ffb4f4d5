"""``claid serve``: instance search over an index dir through a JSON API and a page.

    engine.py          SearchEngine: memory-mapped index + store, descriptor, bounded forward pool
    request_fields.py  every search body, form field and their OpenAPI description, parsed or refused
    database_images.py database images (ids through the index's table only), hierarchies, uploads
    app.py             create_app: the FastAPI routes (/api/health, /api/search, /api/images/...,
                       /docs and /redoc served offline)
    runs.py            the run explorer's routes (/api/run...), over run_records.py's checked files
    query_editor.py    --queries FILE: a collection's queries.jsonl edited from the page (/api/queries)
    cli.py             python -m claid serve --run-dir R | --index-dir D [--queries FILE]
    static/            the page at / (plain HTML + JS, nothing fetched from the network)
"""

from claid.serve.app import create_app

__all__ = ["create_app"]
