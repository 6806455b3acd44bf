import subprocess
import sys

from proxy import cli


def test_help_lists_every_subcommand(capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("proxy", "agent", "train", "demo", "bench", "simulate"):
        assert name in out


def test_unknown_command_fails_with_usage() -> None:
    proc = subprocess.run([sys.executable, "-m", "proxy.cli", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown command 'nope'" in proc.stderr
