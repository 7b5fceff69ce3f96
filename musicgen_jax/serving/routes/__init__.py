"""The HTTP and WebSocket routes, one router per responsibility (``create_app`` includes them in order).

``generate``: tasks (queue, status, download, list); ``evaluate``: audio metrics; ``stream``: the
WebSocket and its session list; ``system``: health, readiness, metrics, server info, the page.
"""
