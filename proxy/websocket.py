"""WebSocket upgrades: handshake with the backend first, then bridge frames both ways.

The backend handshake happens before the client is answered, so a refused or unreachable backend
turns into an ordinary 502/504 instead of an upgraded connection that dies at once. After that,
two pumps copy messages in each direction; pings and pongs are forwarded (``autoping`` is off on
both sides, so liveness checks stay end to end) and a close from either side closes the other
with the same code. Per-message compression is not negotiated on either leg: frames are copied,
not recompressed.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import ClientSession, WSMsgType, web

from .errors import InvalidUpstreamResponse, UpstreamConnectError, UpstreamTimeout
from .tasks import cancel_and_wait

AnyWebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


async def connect_upstream(
    session: ClientSession,
    url: str,
    headers: list[tuple[str, str]],
    protocols: tuple[str, ...],
    *,
    connect_s: float,
    read_s: float,
) -> aiohttp.ClientWebSocketResponse:
    """Open the backend leg, mapping failures onto the proxy's error tree."""
    forwarded = [(n, v) for n, v in headers if not n.lower().startswith("sec-websocket-")]
    try:
        # the handshake is a request like any other: bounded by the connect and read timeouts
        async with asyncio.timeout(connect_s + read_s):
            return await session.ws_connect(
                url,
                headers=forwarded,
                protocols=protocols,
                autoping=False,
                compress=0,
                max_msg_size=MAX_MESSAGE_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=read_s),
            )
    except aiohttp.WSServerHandshakeError as exc:
        raise InvalidUpstreamResponse(f"backend refused the upgrade ({exc.status})") from None
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamConnectError(f"connect to {url}: {exc.os_error.strerror or exc}") from None
    except (aiohttp.ServerTimeoutError, TimeoutError):
        raise UpstreamTimeout(f"WebSocket handshake with {url} timed out") from None
    except aiohttp.ClientError as exc:
        raise InvalidUpstreamResponse(f"WebSocket handshake failed: {exc}") from None


async def bridge(
    request: web.BaseRequest, upstream: aiohttp.ClientWebSocketResponse
) -> web.WebSocketResponse:
    """Upgrade the client leg and copy messages until either side closes."""
    protocols = (upstream.protocol,) if upstream.protocol else ()
    client = web.WebSocketResponse(
        protocols=protocols, autoping=False, compress=False, max_msg_size=MAX_MESSAGE_BYTES
    )
    try:
        await client.prepare(request)
        to_backend = asyncio.create_task(_pump(client, upstream))
        to_client = asyncio.create_task(_pump(upstream, client))
        try:
            await asyncio.wait((to_backend, to_client), return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _close_both(client, upstream)
            await cancel_and_wait(to_backend)
            await cancel_and_wait(to_client)
    finally:
        await upstream.close()
    return client


async def _pump(src: AnyWebSocket, dst: AnyWebSocket) -> None:
    while True:
        msg = await src.receive()
        kind = msg.type
        if kind == WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif kind == WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif kind == WSMsgType.PING:
            await dst.ping(msg.data)
        elif kind == WSMsgType.PONG:
            await dst.pong(msg.data)
        elif kind == WSMsgType.CLOSE:
            await dst.close(code=msg.data or 1000, message=(msg.extra or "").encode())
            return
        else:  # CLOSING, CLOSED, ERROR
            return


async def _close_both(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
        if not client.closed:
            await client.close()
    with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
        if not upstream.closed:
            await upstream.close()
