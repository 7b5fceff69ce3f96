"""The FastAPI application: ``create_app(settings, model=None)`` wires the parts of one server.

With ``model=None`` the model named by ``settings.model`` is loaded on the device thread after
start; ``/health`` answers 200 once it is loaded and ``/ready`` once the configured buckets are
compiled (requests before that get 503).

The parts: routes by responsibility (:mod:`.routes`), what they depend on (:mod:`.dependencies`:
the service, the caller, keys and rate limits), how errors are answered (:mod:`.responses`,
:mod:`.error_handlers`), the body size limit (:mod:`.body_limit`) and the published schema
(:mod:`.openapi`). The server's state lives on ``app.state``: ``service``, ``settings`` and
``request_model``.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from musicgen_jax import __version__
from musicgen_jax.runtime import enable_compilation_cache
from musicgen_jax.serving import schemas
from musicgen_jax.serving.body_limit import BodySizeLimitMiddleware
from musicgen_jax.serving.error_handlers import InternalErrorMiddleware, install_error_handlers
from musicgen_jax.serving.metrics import MetricsMiddleware
from musicgen_jax.serving.openapi import DESCRIPTION, install_openapi
from musicgen_jax.serving.responses import SafeJSONResponse
from musicgen_jax.serving.routes import evaluate, generate, stream, system
from musicgen_jax.serving.service import MusicService
from musicgen_jax.serving.settings import ServerSettings

logger = logging.getLogger(__name__)


def create_app(settings: ServerSettings | None = None, model=None, *, start_worker: bool = True) -> FastAPI:
    """Build the server. ``model``: an already loaded :class:`~musicgen_jax.MusicGen` (else
    ``settings.model`` is loaded at start). ``start_worker=False`` leaves tasks queued, for tests
    of the HTTP layer alone."""
    settings = settings or ServerSettings()
    enable_compilation_cache(settings.compilation_cache_dir)
    service = MusicService(settings, model, start_worker=start_worker)
    app = FastAPI(
        title="musicgen-jax",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan,
        default_response_class=SafeJSONResponse,
        redoc_url=None,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.request_model = schemas.request_model(
        settings.max_prompt_chars, settings.max_duration, settings.default_duration
    )
    # Middleware added first runs innermost: the size limit must see its own error before the
    # catch-all, and the metrics count every answer, refusals included.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(InternalErrorMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=system.PAGE_DIR), name="static")
    for routes in (generate, evaluate, stream, system):
        app.include_router(routes.router)
    install_openapi(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    service: MusicService = app.state.service
    service.start()
    cleanup = asyncio.create_task(_cleanup_loop(service))
    try:
        yield
    finally:
        cleanup.cancel()
        await run_in_threadpool(service.stop)


async def _cleanup_loop(service: MusicService) -> None:
    """Delete old finished tasks now and then (in a thread: it touches the disk)."""
    settings = service.settings
    while True:
        try:
            await run_in_threadpool(
                service.store.cleanup,
                settings.retention_hours * 3600.0,
                settings.max_storage_mb * 1024 * 1024,
            )
        except Exception:
            logger.exception("cleanup failed")
        await asyncio.sleep(settings.cleanup_interval_seconds)
