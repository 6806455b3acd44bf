"""Prometheus text parsing and the kept-alive scraper, against a real HTTP server on loopback."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from metrics_agent.scrape import ScrapeError, Scraper, parse_text

PAGE = """\
# HELP presage_backend_in_flight Requests being served.
# TYPE presage_backend_in_flight gauge
presage_backend_in_flight{worker="0"} 3
presage_backend_in_flight{worker="1",path="/a b{c}\\"d"} 4 1700000000000
presage_backend_queue_length 2.5
app_workers 8
presage_backend_workers_total 99
unrelated_metric{x="presage_backend_in_flight"} 1000
presage_backend_queue_length{bad} nope
app_in_flight NaN
"""


def test_parse_sums_label_sets_maps_names_and_skips_what_it_cannot_read() -> None:
    got = parse_text(PAGE)
    assert got == {"app_in_flight": 7.0, "app_queue_length": 2.5, "app_workers": 8.0}


def test_parse_of_an_empty_or_foreign_page_is_empty() -> None:
    assert parse_text("") == {}
    assert parse_text("# only comments\nhttp_requests_total 5\n") == {}


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str], dict[str, int]]]:
    connections: list[str] = []
    state = {"status": 200}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            connections.append(str(self.client_address))

        def do_GET(self) -> None:
            body = PAGE.encode() if state["status"] == 200 else b"boom"
            self.send_response(state["status"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", connections, state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_scraper_keeps_one_connection_and_names_an_http_error(
    http_server: tuple[str, list[str], dict[str, int]],
) -> None:
    url, connections, state = http_server
    scraper = Scraper(url, timeout_s=2.0)
    try:
        for _ in range(5):
            assert scraper.read()["app_in_flight"] == 7.0
        assert len(connections) == 1
        state["status"] = 500
        with pytest.raises(ScrapeError, match="HTTP 500"):
            scraper.read()
        state["status"] = 200
        assert scraper.read()["app_workers"] == 8.0
    finally:
        scraper.close()


def test_scraper_names_a_refused_connection_and_a_bad_url() -> None:
    scraper = Scraper("http://127.0.0.1:1/metrics", timeout_s=1.0)
    with pytest.raises(ScrapeError, match=r"127\.0\.0\.1:1"):
        scraper.read()
    scraper.close()
    with pytest.raises(ValueError, match="--scrape"):
        Scraper("ftp://x/metrics", timeout_s=1.0)
