"""HAProxy and NGINX in front of the testbed, by wrapping ``loadtest.external_lb``.

``external_lb`` writes each server's config and runs it in the foreground in a private directory;
here the bench only chooses the algorithm and reports plainly why a row is absent (binary not
installed, or it did not come up) with the command that installs it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from loadtest import external_lb
from loadtest.external_lb import ExternalLB

INSTALL_HINT = "apt-get install haproxy nginx-light"
BINARIES = {"haproxy": external_lb.HAPROXY_BIN, "nginx": external_lb.NGINX_BIN}


def available(server: str) -> str | None:
    """``None`` when ``server`` can run here, else the reason it cannot."""
    binary = BINARIES[server]
    if os.access(binary, os.X_OK):
        return None
    return f"{binary} not installed; install with: {INSTALL_HINT}"


def start(server: str, algorithm: str, backend_urls: Sequence[str], port: int) -> ExternalLB | None:
    """Start ``server`` balancing with ``algorithm`` (``leastconn``, ``least_conn``, ...) on ``port``.

    ``None`` when it did not start; ``external_lb`` has logged why.
    """
    if server == "haproxy":
        return external_lb.start_haproxy(backend_urls, port, balance=algorithm)
    if server == "nginx":
        return external_lb.start_nginx(backend_urls, port, balance=algorithm)
    raise ValueError(f"unknown external balancer {server!r}")


def versions() -> dict[str, str | None]:
    """The first line of ``-v`` of each server (``None`` when absent), recorded in the results."""
    import subprocess

    out: dict[str, str | None] = {}
    for server, binary in BINARIES.items():
        if available(server) is not None:
            out[server] = None
            continue
        try:
            done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as exc:
            logging.getLogger("presage.bench").warning("%s -v failed: %s", binary, exc)
            out[server] = None
            continue
        text = (done.stdout or done.stderr).strip().splitlines()
        out[server] = text[0] if text else ""
    return out
