import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
BPE_DIR = SHARED / "data" / "qwen2-bpe"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition, why):
    """Skip locally when a tool is missing, but fail in CI: a skipped check must not pass as done."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {why}")
    pytest.skip(why)


def cmake_build(build_dir, extra_args=()):
    """Configure + build the C++ engine, tests and benchmarks (plain CMake, no Python)."""
    build_dir = Path(build_dir)
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), *gen,
                    "-DCMAKE_BUILD_TYPE=Release", *extra_args], check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    r = subprocess.run(["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 2)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"C++ build in {build_dir} failed:\n{r.stdout[-6000:]}")
    return build_dir


@pytest.fixture(scope="session")
def native_build():
    return cmake_build(ROOT / "build" / "ctest-native")


@pytest.fixture(scope="session")
def aarch64_build():
    require(shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64"),
            "aarch64 cross toolchain and qemu-user (apt-get install g++-aarch64-linux-gnu qemu-user)")
    return cmake_build(ROOT / "build" / "ctest-aarch64",
                       [f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'cmake' / 'aarch64-linux-gnu.cmake'}",
                        "-DMINICPMV_BENCH=OFF"])


@pytest.fixture(scope="session")
def bpe_dir():
    require(BPE_DIR.is_dir(), f"{BPE_DIR} (the shared Qwen2 vocabulary) is missing")
    return BPE_DIR


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory, bpe_dir):
    """A tiny random MiniCPM-V 2.6 checkpoint in the real Hugging Face layout (real vocabulary)."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_checkpoint import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-hf") / "MiniCPM-V-2_6", seed=0)


@pytest.fixture(scope="session")
def tiny_f32(tiny_checkpoint_dir, tmp_path_factory):
    """That checkpoint converted by our converter: (LLM f32 GGUF, mmproj f32 GGUF)."""
    from minicpmv_edge.convert.converter import convert_checkpoint

    out = tmp_path_factory.mktemp("tiny-gguf")
    paths = convert_checkpoint(tiny_checkpoint_dir, out, quant="f32", mmproj_type="f32", progress=False)
    llm = [p for p in paths if "mmproj" not in p.name][0]
    mm = [p for p in paths if "mmproj" in p.name][0]
    return llm, mm
