"""Prometheus metrics of one server, in its own registry (several apps may live in one process).

Requests are counted by route template (``/generate/{task_id}``, not the id itself) so the label
set stays small; unmatched paths share the label ``unmatched``.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_RTF_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServerMetrics:
    """The server's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "musicgen_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "musicgen_http_request_seconds",
            "HTTP request handling time",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # With a shared (PostgreSQL) store: the shared queue's depth, the same on every replica, so
        # an autoscaler can scale on it.
        self.queue_depth = Gauge(
            "musicgen_queue_depth", "requests waiting for a device (the shared queue's)", registry=r
        )
        self.cache_hits = Counter(
            "musicgen_cache_hits", "requests answered with an identical finished task's audio", registry=r
        )
        self.tasks = Counter("musicgen_tasks", "tasks finished, by final status", ["status"], registry=r)
        self.task_latency = Histogram(
            "musicgen_task_latency_seconds",
            "task submission to audio file written",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "musicgen_queue_wait_seconds",
            "task submission to its batch starting",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.generation_seconds = Histogram(
            "musicgen_generation_seconds",
            "device time of one batch (compilation excluded)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.real_time_factor = Histogram(
            "musicgen_real_time_factor",
            "seconds of audio per second of device time, per batch",
            buckets=_RTF_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "musicgen_batch_size", "requests per generation batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.audio_seconds = Counter("musicgen_audio_seconds", "seconds of audio generated", registry=r)
        self.compile_seconds = Counter("musicgen_compile_seconds", "seconds spent compiling", registry=r)
        self.stream_sessions = Gauge(
            "musicgen_stream_sessions", "live WebSocket streaming sessions", registry=r
        )
        self.rate_limited = Counter(
            "musicgen_rate_limited", "requests refused by the rate limiter", registry=r
        )
        self.ready = Gauge("musicgen_ready", "1 once the model is loaded and warmed up", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware counting HTTP responses by route template and status."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        began = time.perf_counter()

        async def record_status(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(label, scope["method"], str(status["code"])).inc()
            self.metrics.request_seconds.labels(label).observe(time.perf_counter() - began)
