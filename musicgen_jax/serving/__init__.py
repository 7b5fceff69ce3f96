"""The HTTP/WebSocket server: ``create_app(settings, model=None)`` and ``python serve.py``.

Modules follow a request's path: ``settings`` (what the server is told), ``app`` (routes, limits,
errors), ``schemas`` (what requests and responses look like), ``security`` (API keys, rate
limits), ``service`` (requests into tasks and files), ``queue`` (the device owner that batches),
``streaming`` (WebSocket sessions), ``store`` (SQLite + files), ``metrics`` (Prometheus),
``page/`` (the web page), ``cli`` (the entry point).
"""

from musicgen_jax.serving.app import create_app
from musicgen_jax.serving.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
