"""Header rewriting: hop-by-hop removal (RFC 9110 7.6.1), Via, X-Forwarded-*, Forwarded (RFC 7239)."""

from __future__ import annotations

from proxy.headers import (
    ForwardingPolicy,
    connection_tokens,
    forwarded_element,
    raw_response_block,
    response_headers,
    rewrite_request,
    str_request_headers,
)


def fields(block: bytes) -> list[tuple[str, str]]:
    return str_request_headers(block)


def rewrite(raw: list[tuple[bytes, bytes]], **policy: object) -> dict[str, str]:
    rw = rewrite_request(
        raw, peer="10.0.0.9", scheme="http", version="1.1", policy=ForwardingPolicy(**policy)
    )
    out = fields(rw.block)
    assert len({n.lower() for n, _ in out}) == len(out), "no field is emitted twice"
    return {n.lower(): v for n, v in out}


def test_hop_by_hop_and_connection_listed_fields_are_dropped() -> None:
    raw = [
        (b"Host", b"example.com"),
        (b"Connection", b"keep-alive, X-Private"),
        (b"X-Private", b"secret"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"TE", b"trailers"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"Accept", b"*/*"),
    ]
    out = rewrite(raw)
    assert set(out) == {"host", "accept", "via", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
    assert out["host"] == "example.com"


def test_via_is_appended_to_an_existing_chain() -> None:
    out = rewrite([(b"Via", b"1.0 fred")])
    assert out["via"] == "1.0 fred, 1.1 presage"


def test_untrusted_peer_cannot_forge_forwarding_headers() -> None:
    raw = [
        (b"Host", b"example.com"),
        (b"X-Forwarded-For", b"1.2.3.4, 5.6.7.8"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"evil.example"),
        (b"Forwarded", b"for=1.2.3.4"),
    ]
    out = rewrite(raw)
    assert out["x-forwarded-for"] == "10.0.0.9"
    assert out["x-forwarded-proto"] == "http"
    assert out["x-forwarded-host"] == "example.com"
    assert "forwarded" not in out


def test_trusted_hops_keep_only_the_entries_they_appended() -> None:
    raw = [
        (b"X-Forwarded-For", b"6.6.6.6, 1.1.1.1"),
        (b"X-Forwarded-For", b"2.2.2.2"),
        (b"X-Forwarded-Proto", b"https"),
    ]
    one = rewrite(raw, trusted_hops=1)
    assert one["x-forwarded-for"] == "2.2.2.2, 10.0.0.9"
    assert one["x-forwarded-proto"] == "https"
    two = rewrite(raw, trusted_hops=2)
    assert two["x-forwarded-for"] == "1.1.1.1, 2.2.2.2, 10.0.0.9"


def test_forwarded_header_follows_rfc_7239() -> None:
    out = rewrite([(b"Host", b"example.com:8080")], forwarded_header=True)
    assert out["forwarded"] == 'for=10.0.0.9;proto=http;host="example.com:8080"'
    assert (
        forwarded_element("2001:db8::1", "https", "a.example")
        == 'for="[2001:db8::1]";proto=https;host=a.example'
    )
    kept = rewrite([(b"Forwarded", b"for=1.1.1.1, for=2.2.2.2")], trusted_hops=1, forwarded_header=True)
    assert kept["forwarded"] == "for=2.2.2.2, for=10.0.0.9;proto=http"


def test_request_id_expect_and_upgrade_are_reported_not_copied_blindly() -> None:
    raw = [
        (b"X-Request-Id", b"abc"),
        (b"Expect", b"100-continue"),
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"websocket"),
    ]
    rw = rewrite_request(raw, peer="10.0.0.9", scheme="http", version="1.1", policy=ForwardingPolicy())
    assert rw.request_id == "abc"
    assert rw.expect_continue is True
    assert rw.upgrade == "websocket"
    names = {n.lower() for n, _ in fields(rw.block)}
    assert "expect" not in names and "upgrade" not in names and "x-request-id" in names


def test_response_fields_lose_hop_by_hop_and_gain_via() -> None:
    upstream = [
        (b"Content-Type", b"text/plain"),
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"12"),
        (b"Via", b"1.1 origin-cache"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]
    out = response_headers(upstream, "1.1 presage", drop_length=True)
    assert sorted(k for k, _ in out.items()) == ["Content-Type", "Set-Cookie", "Set-Cookie", "Via"]
    assert out.getall("Set-Cookie") == ["a=1", "b=2"]
    assert out["Via"] == "1.1 origin-cache, 1.1 presage"
    block = raw_response_block(upstream)
    assert block.split(b"\r\n") == [
        b"Content-Type: text/plain",
        b"Content-Length: 12",
        b"Via: 1.1 origin-cache",
        b"Set-Cookie: a=1",
        b"Set-Cookie: b=2",
    ]


def test_connection_tokens() -> None:
    assert connection_tokens("Keep-Alive, X-A ,x-b") == {"keep-alive", "x-a", "x-b"}
    assert connection_tokens(None) == frozenset()
