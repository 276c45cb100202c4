"""Bandwidth budgets: `--max-rate` per target and `--max-total-rate` for all, held while files are
copied. (How closely the rate holds is measured in benches/; here, that the budget is enforced.)"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import softcopy
from conftest import assert_same_tree, softcopy_cmd
from softcopy.config import ConfigError, parse_rate

MIB = 1 << 20


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("200M", 200 * MIB),
        ("1.5G", 3 << 29),
        ("500K", 500 << 10),
        ("200MiB/s", 200 * MIB),
        ("64MB", 64 * MIB),
        (1000, 1000),
        ("4096", 4096),
    ],
)
def test_rates(text: object, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "0", "-5M", "", True, "1Q"])
def test_bad_rates(text: object) -> None:
    with pytest.raises(ConfigError):
        parse_rate(text)


def source(root: Path, files: int, size: int) -> None:
    root.mkdir(parents=True)
    for i in range(files):
        (root / str(i)).write_bytes(bytes([i]) * size)


def test_max_rate_holds_a_target_to_its_budget(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    source(src, 1, 6 * MIB)  # one file: the budget must hold *within* a file, not only between files
    t0 = time.monotonic()
    r = subprocess.run(
        softcopy_cmd(src, dst, "--once", "--max-rate", "2M"), check=False, capture_output=True, text=True
    )
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert elapsed >= 2.5, f"6 MiB at 2 MiB/s took only {elapsed:.2f} s"  # ~3 s, minus the first step
    assert_same_tree(src, dst)


def test_max_total_rate_is_shared_by_all_targets(tmp_path: Path) -> None:
    for name in ("a", "b"):
        source(tmp_path / name, 4, MIB)
    targets = [softcopy.Target(tmp_path / n, tmp_path / f"{n}-copy", once=True) for n in ("a", "b")]
    t0 = time.monotonic()
    try:
        with softcopy.Copier(targets, max_total_rate=4 * MIB) as c:
            report = c.wait(60)
    finally:
        softcopy._softcopy.set_total_rate(None)  # the budget is process-wide: no later test may inherit it
    elapsed = time.monotonic() - t0
    assert report is not None and report.ok
    assert elapsed >= 1.5, f"8 MiB at 4 MiB/s in all took only {elapsed:.2f} s"


def test_bad_rate_on_the_command_line_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    cmd = softcopy_cmd(tmp_path / "src", tmp_path / "dst", "--max-rate", "fast")
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert r.returncode == 2 and "not a rate" in r.stderr and "Traceback" not in r.stderr
