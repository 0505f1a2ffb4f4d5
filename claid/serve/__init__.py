"""``claid serve``: instance search over an index dir through a JSON API (issue 17).

First slice: the app factory with its start-time structural check and ``/api/health``.
"""

from claid.serve.app import create_app

__all__ = ["create_app"]
