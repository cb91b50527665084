"""``logitlens serve``: a local web viewer and JSON API over models loaded once.

``create_app`` (app.py) builds the FastAPI app: the API (request/response models in schemas.py), one
bounded worker per model (queue.py), the held results (store.py), the guard in front (guard.py: Host,
origin, token, body size) and the static page (static/: index.html, app.js, app.css; plotly.js comes from
the installed plotly package). ``server.serve`` runs it with uvicorn. This layer imports the engine, views
and tasks, never ``logitlens.cli``.

Example:
    >>> from logitlens import LogitLens
    >>> from logitlens.web import ServeConfig, create_app, serve
    >>> config = ServeConfig(port=8000)
    >>> serve(create_app([LogitLens.from_pretrained("default")], config=config), config)
"""

from __future__ import annotations

from .app import ServeConfig, create_app
from .server import BackgroundServer, prepare, serve, url

__all__ = ["BackgroundServer", "ServeConfig", "create_app", "prepare", "serve", "url"]
