"""Is netem usable here? A throw-away network namespace gets a netem qdisc on its loopback.

netem (``tc qdisc ... netem delay``) adds delay inside the kernel; in a namespace it touches no
interface of the host. Many kernels are built without ``sch_netem`` ("Specified qdisc kind is
unknown"); then a backend's ``delay_ms`` is served by the backend itself (``--delay-ms``: an
asyncio sleep before the answer), which adds the same latency without a kernel queue.
"""

from __future__ import annotations

import os
import shutil
import subprocess


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return out.returncode, (out.stderr or out.stdout).strip()


def probe_netem() -> str:
    """``"available"`` or ``"unavailable: <reason>"``; leaves nothing behind."""
    ip, tc = shutil.which("ip"), shutil.which("tc")
    if ip is None or tc is None:
        return "unavailable: ip/tc (iproute2) not on PATH"
    ns = f"presage-netem-probe-{os.getpid()}"
    rc, err = _run([ip, "netns", "add", ns])
    if rc != 0:
        return f"unavailable: ip netns add failed ({err})"
    try:
        qdisc = [tc, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
        rc, err = _run([ip, "netns", "exec", ns, *qdisc])
        return "available" if rc == 0 else f"unavailable: tc netem failed ({err})"
    finally:
        _run([ip, "netns", "del", ns])
