"""The package as a lab installs it: a release wheel (abi3) built by maturin, installed into a fresh
virtual environment with no Rust toolchain on PATH, runs the demo and a live copy; `uvx` runs it too.
Slow (a release build): skipped unless SOFTCOPY_TEST_WHEEL=1, which `make test` sets."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.environ.get("SOFTCOPY_TEST_WHEEL") != "1", reason="set SOFTCOPY_TEST_WHEEL=1")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(["maturin", "build", "--release", "--quiet", "--out", str(out)], cwd=ROOT, check=True)
    subprocess.run(["maturin", "sdist", "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    return out


def no_rust_env(venv: Path) -> dict[str, str]:
    """PATH with the venv first and no directory that holds cargo or rustc."""
    dirs = [
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d, "cargo").exists() or Path(d, "rustc").exists())
    ]
    return {**os.environ, "PATH": os.pathsep.join([str(venv / "bin"), *dirs]), "VIRTUAL_ENV": str(venv)}


def test_wheel_is_abi3_with_version_from_cargo_toml_and_an_sdist(dist: Path) -> None:
    [wheel] = dist.glob("*.whl")
    assert "abi3" in wheel.name
    version = next(
        line.split('"')[1] for line in (ROOT / "Cargo.toml").read_text().splitlines() if line.startswith("version")
    )
    assert wheel.name.startswith(f"softcopy-{version}-")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".pyi") for n in names) and "softcopy/py.typed" in names
    assert list(dist.glob(f"softcopy-{version}.tar.gz")), "an sdist"


def test_clean_venv_without_rust_installs_the_wheel_and_copies(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = no_rust_env(venv)
    assert subprocess.run(["sh", "-c", "command -v cargo"], env=env, check=False, capture_output=True).returncode != 0
    [wheel] = dist.glob("*.whl")
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], env=env, check=True)
    demo = subprocess.run(["softcopy", "--demo"], env=env, check=False, capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stderr
    assert "verified complete" in demo.stderr and "identical" in demo.stderr
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "c" / "0").mkdir(parents=True)
    (src / "c" / "0" / "0").write_bytes(b"chunk")
    (src / "complete").touch()
    r = subprocess.run(["softcopy", str(src), str(dst)], env=env, check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (dst / "c" / "0" / "0").read_bytes() == b"chunk" and (dst / "complete").exists()


def test_uvx_runs_the_wheel(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "uv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**no_rust_env(venv), "UV_CACHE_DIR": str(tmp_path / "cache"), "UV_TOOL_DIR": str(tmp_path / "tools")}
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "uv"], env=env, check=True)
    [wheel] = dist.glob("*.whl")
    r = subprocess.run(
        ["uvx", "--from", str(wheel), "softcopy", "--help"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "TARGETS_FILE" in r.stdout
