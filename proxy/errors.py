"""The data plane's error tree and its fixed status mapping.

::

    ProxyError                      carries status, a short reason token and the response
    ├── ClientRequestError          the request itself is at fault (4xx); never retried
    │   ├── MalformedRequest        400 malformed_request
    │   ├── MethodNotAllowed        405 method_not_allowed (CONNECT: no tunnels)
    │   ├── BodyTooLarge            413 body_too_large
    │   ├── UriTooLong              414 uri_too_long
    │   ├── HeadersTooLarge         431 headers_too_large
    │   └── ClientAborted           499 client_abort (logged only: nobody is left to answer)
    └── UpstreamError               no usable answer from a backend (5xx)
        ├── NoBackend               503 no_backend, with Retry-After
        ├── PoolOverflow            503 pool_overflow, with Retry-After (connection limit reached)
        ├── UpstreamConnectError    502 connect_error (retryable on another backend)
        ├── InvalidUpstreamResponse 502 invalid_response
        │   └── UpstreamReset       502 upstream_reset (closed before any response byte)
        └── UpstreamTimeout         504 upstream_timeout

The reason token is sent in the ``x-presage-reason`` response header and written to the access
log (Envoy's response flags, spelt out). ``asyncio.CancelledError`` is never caught as one of
these: it means the client went away or the worker is stopping, and it always propagates
(aiohttp's ``_handle_request``).
"""

from __future__ import annotations

from aiohttp import web

REASON_HEADER = "x-presage-reason"


class ProxyError(Exception):
    status: int = 502
    reason: str = "proxy_error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)
        self.detail = detail or self.reason

    def headers(self) -> dict[str, str]:
        return {REASON_HEADER: self.reason}

    def response(self) -> web.Response:
        text = f"{self.status} {self.reason}: {self.detail}\n"
        return web.Response(status=self.status, text=text, headers=self.headers())


class ClientRequestError(ProxyError):
    status = 400
    reason = "bad_request"


class MalformedRequest(ClientRequestError):
    status = 400
    reason = "malformed_request"


class MethodNotAllowed(ClientRequestError):
    status = 405
    reason = "method_not_allowed"


class BodyTooLarge(ClientRequestError):
    status = 413
    reason = "body_too_large"


class UriTooLong(ClientRequestError):
    status = 414
    reason = "uri_too_long"


class HeadersTooLarge(ClientRequestError):
    status = 431
    reason = "headers_too_large"


class ClientAborted(ClientRequestError):
    status = 499  # NGINX's "client closed request"
    reason = "client_abort"


class UpstreamError(ProxyError):
    status = 502
    reason = "upstream_error"


class NoBackend(UpstreamError):
    status = 503
    reason = "no_backend"
    retry_after_s = 1

    def headers(self) -> dict[str, str]:
        return {REASON_HEADER: self.reason, "Retry-After": str(self.retry_after_s)}


class PoolOverflow(NoBackend):
    status = 503
    reason = "pool_overflow"


class UpstreamConnectError(UpstreamError):
    status = 502
    reason = "connect_error"


class InvalidUpstreamResponse(UpstreamError):
    status = 502
    reason = "invalid_response"


class UpstreamReset(InvalidUpstreamResponse):
    reason = "upstream_reset"


class UpstreamTimeout(UpstreamError):
    status = 504
    reason = "upstream_timeout"
