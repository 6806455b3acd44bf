"""The admin listener (its own port, 127.0.0.1 by default), as Envoy's admin interface.

* ``GET /healthz`` - 200 while the process runs (liveness);
* ``GET /readyz`` - 200 when serving, 503 once a SIGTERM started draining, so a load balancer in
  front stops sending new connections before the listener closes (readiness);
* ``GET /metrics`` - Prometheus text format (all workers when ``--workers > 1``);
* ``GET /v1/backends`` - this worker's view of every backend: state, in-flight, peak-EWMA,
  ejections (workers do not share balancer state, as Envoy's worker threads do not).
"""

from __future__ import annotations

import os
from typing import Protocol

import orjson
from aiohttp import web

from .metrics import CONTENT_TYPE, Metrics


class AdminView(Protocol):
    """What the admin endpoints read from the running worker."""

    metrics: Metrics

    @property
    def draining(self) -> bool: ...

    def backends_json(self) -> dict[str, object]: ...

    def model_json(self) -> dict[str, object]: ...


RUNTIME_KEY: web.AppKey[AdminView] = web.AppKey("presage_runtime")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    if request.app[RUNTIME_KEY].draining:
        return web.Response(status=503, text="draining\n")
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    body = request.app[RUNTIME_KEY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def backends(request: web.Request) -> web.Response:
    payload = request.app[RUNTIME_KEY].backends_json()
    payload["worker_pid"] = os.getpid()
    return web.Response(
        body=orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY),
        content_type="application/json",
    )


async def model(request: web.Request) -> web.Response:
    """The model in service, its live accuracy, fallbacks by reason, and the shadow's verdict."""
    payload = request.app[RUNTIME_KEY].model_json()
    payload["worker_pid"] = os.getpid()
    return web.Response(
        body=orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY),
        content_type="application/json",
    )


def make_admin_app(runtime: AdminView) -> web.Application:
    app = web.Application()
    app[RUNTIME_KEY] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/backends", backends)
    app.router.add_get("/v1/model", model)
    return app
