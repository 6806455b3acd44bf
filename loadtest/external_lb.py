"""HAProxy and NGINX as reference load balancers: config writers and process control for benchmarks.

Both run from the operating system's binaries (``/usr/sbin/haproxy``, ``/usr/sbin/nginx``) in the
foreground, with a private temporary directory for the config, pid file, logs and temp files, so
nothing outside it is touched and several can run at once. Each is configured the way one would
run it in front of a keep-alive HTTP/1.1 service: connection reuse to the backends, access logs
off (as Presage's are in the benchmark), one worker thread/process per core.

* HAProxy: ``balance leastconn`` (or any ``balance`` algorithm), ``nbthread`` defaults to the
  number of CPUs, ``http-reuse safe`` (its default) keeps server connections warm.
* NGINX: ``least_conn`` or ``random two least_conn`` in the ``upstream`` block, ``keepalive``
  connections to the backends (``proxy_http_version 1.1`` and an empty ``Connection`` header, as
  the NGINX documentation prescribes for upstream keep-alive).

``start_haproxy``/``start_nginx`` return ``None`` (and log why) when the binary is missing or
the process does not come up, so a benchmark can report the row as absent instead of failing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("presage.external_lb")

HAPROXY_BIN = "/usr/sbin/haproxy"
NGINX_BIN = "/usr/sbin/nginx"
START_TIMEOUT_S = 10.0


@dataclass
class ExternalLB:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ExternalLB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _authority(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 80}"


def haproxy_config(
    backends: Sequence[str], listen_port: int, workdir: Path, *, balance: str = "leastconn"
) -> str:
    servers = "\n".join(f"    server b{i} {_authority(url)}" for i, url in enumerate(backends, 1))
    return f"""global
    maxconn 4096
    pidfile {workdir}/haproxy.pid

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option http-keep-alive

frontend presage_bench
    bind 127.0.0.1:{listen_port}
    default_backend backends

backend backends
    balance {balance}
{servers}
"""


def nginx_config(
    backends: Sequence[str], listen_port: int, workdir: Path, *, balance: str = "least_conn"
) -> str:
    servers = "\n".join(f"        server {_authority(url)};" for url in backends)
    return f"""worker_processes auto;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    keepalive_requests 1000000;
    upstream backends {{
        {balance};
{servers}
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{listen_port};
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_haproxy(
    backends: Sequence[str], listen_port: int, *, balance: str = "leastconn", binary: str = HAPROXY_BIN
) -> ExternalLB | None:
    if not os.access(binary, os.X_OK):
        log.warning("HAProxy not measured: %s is not installed", binary)
        return None
    workdir = Path(tempfile.mkdtemp(prefix="presage-haproxy-"))
    config = workdir / "haproxy.cfg"
    config.write_text(haproxy_config(backends, listen_port, workdir, balance=balance))
    return _start(f"haproxy-{balance}", [binary, "-db", "-f", str(config)], listen_port, workdir)


def start_nginx(
    backends: Sequence[str], listen_port: int, *, balance: str = "least_conn", binary: str = NGINX_BIN
) -> ExternalLB | None:
    if not os.access(binary, os.X_OK):
        log.warning("NGINX not measured: %s is not installed", binary)
        return None
    workdir = Path(tempfile.mkdtemp(prefix="presage-nginx-"))
    config = workdir / "nginx.conf"
    config.write_text(nginx_config(backends, listen_port, workdir, balance=balance))
    command = [binary, "-p", str(workdir), "-c", str(config), "-g", "daemon off;"]
    return _start(f"nginx-{balance.replace(' ', '-')}", command, listen_port, workdir)


def _start(name: str, command: list[str], port: int, workdir: Path) -> ExternalLB | None:
    stderr = (workdir / "stderr.log").open("wb")
    try:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=workdir)
    except OSError as exc:
        log.warning("%s not measured: %s", name, exc)
        shutil.rmtree(workdir, ignore_errors=True)
        return None
    finally:
        stderr.close()
    lb = ExternalLB(name, port, process, workdir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reason = (workdir / "stderr.log").read_text(errors="replace").strip()[-500:]
            log.warning("%s not measured: exited with %s: %s", name, process.returncode, reason)
            lb.stop()
            return None
        if _accepts(port):
            return lb
        time.sleep(0.05)
    log.warning("%s not measured: port %d not open after %.0fs", name, port, START_TIMEOUT_S)
    lb.stop()
    return None


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False
