"""Source patterns and exclude globs are matched as the platform compares names: case-insensitively
on Windows (NTFS, SMB), byte for byte elsewhere."""

from __future__ import annotations

import pytest
from softcopy.config import CASE_SENSITIVE_NAMES, matches


@pytest.mark.parametrize("name", ["RUN.ZARR", "run.Zarr", "Run.zarr", "run.zarr"])
def test_on_windows_a_pattern_matches_whatever_the_case(name: str) -> None:
    assert matches(name, "*.zarr", case_sensitive=False)
    assert matches(name, "RUN*.ZARR", case_sensitive=False)


def test_elsewhere_a_pattern_matches_the_name_as_written() -> None:
    assert matches("run.zarr", "*.zarr", case_sensitive=True)
    assert not matches("RUN.ZARR", "*.zarr", case_sensitive=True)


def test_case_folding_is_the_windows_rule_only() -> None:
    import os

    assert (os.name != "nt") == CASE_SENSITIVE_NAMES
    assert matches("RUN.ZARR", "*.zarr") == (os.name == "nt")


def test_a_non_match_stays_one_in_any_case() -> None:
    assert not matches("RUN.TIF", "*.zarr", case_sensitive=False)
    assert not matches("run.zarr.tmp", "*.zarr", case_sensitive=False)
