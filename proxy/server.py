"""The data-plane listener: aiohttp's low-level server with the proxy's rejection rules.

aiohttp's HTTP parser (llhttp, strict mode) already rejects malformed request lines and fields,
requests carrying both ``Content-Length`` and ``Transfer-Encoding``, duplicate ``Content-Length``
values and bad chunk framing with a 400 before any handler runs, and closes the connection:
that is the request-smuggling defence. This module only changes how those rejections are
answered: an over-long request target becomes 414, an over-long field or too many fields 431
(RFC 6585), and every rejection carries ``x-presage-reason`` and is access-logged. The parser
reports both length cases as ``LineTooLong`` with the limit it hit, so the two limits are kept
different (``MAX_LINE_BYTES`` for the target, ``MAX_FIELD_BYTES`` for a field) to tell them apart.

The low-level ``web.Server`` (no router, no middleware chain) is used because the data plane has
exactly one handler; ``handler_cancellation`` is on so that a client that goes away cancels its
upstream exchange instead of letting it run to completion (Envoy, HAProxy ``abortonclose``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from .errors import HeadersTooLarge, MalformedRequest, ProxyError, UriTooLong

log = logging.getLogger("presage.server")

MAX_LINE_BYTES = 8190  # request target (NGINX's 8k large_client_header_buffers)
MAX_FIELD_BYTES = 16380  # one header field, name plus value (HAProxy's 16k buffer)
MAX_FIELDS = 128

Rejected = Callable[[web.BaseRequest, ProxyError], None]


def classify(exc: BaseException | None, max_line_size: int) -> ProxyError:
    """The proxy error for a request aiohttp's parser refused."""
    text = getattr(exc, "message", None) or str(exc or "bad request")
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == max_line_size:
            return UriTooLong(f"request target longer than {max_line_size} bytes")
        return HeadersTooLarge(f"header field longer than {limit} bytes")
    if isinstance(exc, BadHttpMessage) and "Too many headers" in text:
        return HeadersTooLarge(f"more than {MAX_FIELDS} header fields")
    return MalformedRequest(text[:200])


class ProxyRequestHandler(RequestHandler):
    on_rejected: Rejected | None = None

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        error = classify(exc, self.max_line_size)
        log.debug("rejected request from %s: %s", request.remote, error.detail)
        if self.on_rejected is not None:
            self.on_rejected(request, error)
        response = error.response()
        response.force_close()  # the parser state is unknown after an error: never reuse
        return response


class ProxyServer(web.Server):
    """``web.Server`` that builds ``ProxyRequestHandler`` protocols."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        on_rejected: Rejected | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_line_size", MAX_LINE_BYTES)
        kwargs.setdefault("max_field_size", MAX_FIELD_BYTES)
        kwargs.setdefault("max_headers", MAX_FIELDS)
        kwargs.setdefault("access_log", None)
        super().__init__(handler, handler_cancellation=True, **kwargs)
        self.on_rejected = on_rejected

    def __call__(self) -> RequestHandler:
        protocol = ProxyRequestHandler(self, loop=self._loop, **self._kwargs)
        protocol.on_rejected = self.on_rejected
        return protocol
