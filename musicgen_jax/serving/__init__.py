"""The HTTP/WebSocket server: ``create_app(settings, model=None)`` and ``python serve.py``.

Modules follow a request's path: ``settings`` (what the server is told), ``app`` (wires the
parts), ``routes/`` (one router per responsibility), ``dependencies`` (the service, the caller,
keys and rate limits), ``body_limit``, ``responses`` and ``error_handlers`` (limits and how errors
are answered), ``openapi`` (the published schema), ``schemas`` (what requests and responses look
like), ``security`` (API keys, rate limits), ``service`` (tasks: life cycle, submit, finish) with
``generation_request`` (a body into a validated request), ``uploads`` (uploaded audio),
``audio_files`` (codes into files), ``views`` (task status), ``evaluation``, and ``errors`` (what
the service refuses, as types); ``queue`` (the device owner that batches), ``streaming`` (the
WebSocket protocol) and ``stream_sessions`` (the sessions speaking it), ``store`` (SQLite + files),
``metrics`` (Prometheus), ``page/`` (the web page), ``cli`` (the entry point).
"""

from musicgen_jax.serving.app import create_app
from musicgen_jax.serving.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
