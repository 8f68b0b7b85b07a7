"""Runs the C++ test programs (tests/cpp/test_*.cpp): natively on every ISA path this CPU has,
and cross-compiled for aarch64 under qemu-aarch64 -cpu max (NEON, dotprod, i8mm)."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPP_TESTS = sorted(p.stem for p in (ROOT / "tests" / "cpp").glob("test_*.cpp"))


def _run(cmd, env_extra=None, timeout=900):
    env = dict(os.environ, **(env_extra or {}))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env=env, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-8000:]}"
    assert " passed, 0 failed" in r.stdout, r.stdout[-4000:]
    return r.stdout


@pytest.mark.parametrize("name", CPP_TESTS)
def test_cpp_native(native_build, name):
    _run([str(native_build / name)])


@pytest.mark.parametrize("name", CPP_TESTS)
def test_cpp_aarch64_qemu(aarch64_build, name):
    _run(["qemu-aarch64", "-cpu", "max", "-L", "/usr/aarch64-linux-gnu", str(aarch64_build / name)])
