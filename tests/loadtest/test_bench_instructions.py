"""``loadtest.bench_instructions``: reading callgrind dumps and turning two windows into a cost per
request. The measurement itself needs valgrind and minutes; it is a benchmark, not a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest import bench_instructions as bi

DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 3110
events: Ir
summary: 1022017167

ob=(17) /usr/lib/libuv.so
fn=(30) uv_run
0 12
totals: 1022017167
"""


def test_the_total_is_read_from_a_dump(tmp_path: Path) -> None:
    (tmp_path / "a.out").write_text(DUMP)
    assert bi.callgrind_total(tmp_path / "a.out") == 1022017167
    (tmp_path / "b.out").write_text(DUMP.replace("summary: 1022017167\n", "").replace("totals:", "summary:"))
    assert bi.callgrind_total(tmp_path / "b.out") == 1022017167


def test_a_file_without_totals_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "c.out").write_text("# callgrind format\nevents: Ir\n")
    with pytest.raises(ValueError, match=r"c\.out: no totals line"):
        bi.callgrind_total(tmp_path / "c.out")


def test_the_idle_window_is_subtracted_before_dividing() -> None:
    # 10 M instructions of background in each window, 1,000 requests costing 250,000 each
    assert bi.per_request(10_000_000 + 250_000_000, 10_000_000, 1000) == 250_000
    with pytest.raises(ValueError, match="no request"):
        bi.per_request(1, 1, 0)


def test_the_summary_takes_medians_and_the_ratio() -> None:
    runs = {
        "round_robin": [{"ir_per_request": v, "idle_ir_per_s": 1e6} for v in (270_000, 272_000, 300_000)],
        "predicted": [{"ir_per_request": v, "idle_ir_per_s": 9e6} for v in (297_000, 299_000, 250_000)],
    }
    s = bi.summarise(runs)
    assert s["policies"]["round_robin"]["ir_per_request"] == 272_000
    assert s["policies"]["predicted"]["ir_per_request"] == 297_000
    assert s["ratio"] == pytest.approx(297_000 / 272_000)
    assert s["extra_ir_per_request"] == 25_000


def test_bad_arguments_are_refused_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bi.main(["--ids", "a,a"])
    assert exc.value.code == 2 and "--ids" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        bi.main(["--duration", "0"])
    assert exc.value.code == 2 and "--duration" in capsys.readouterr().err
