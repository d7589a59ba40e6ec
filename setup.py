"""Build script. Package metadata lives in pyproject.toml.

Builds the C++/CUDA extension diffcore._C from csrc/ ahead of time (CppExtension; a
CUDAExtension when torch has CUDA and nvcc is found). The build degrades, never breaks: if
torch is missing or compiling fails, the package installs without _C and diffcore.native
JIT-compiles on first use (or ops fall back to the torch reference with one warning).

Environment switches:
  DIFFCORE_NO_EXT=1       skip the extension (pure-Python install)
  DIFFCORE_FORCE_EXT=1    a failed extension build fails the install
  DIFFCORE_NO_CUDA=1      CPU extension only, even with a CUDA torch
  DIFFCORE_CUDA_ARCH      CUDA architectures, e.g. "8.0;9.0" (default "8.0;9.0")
  DIFFCORE_NATIVE_ARCH=1  add -march=native (not portable; off by default: the hot loops are
                          compiled for AVX2+FMA and baseline x86-64 and chosen at load time)
  MAX_JOBS                parallel compile jobs (ninja)
"""
import hashlib
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")
CPU_SOURCES = ["csrc/register.cpp", "csrc/cpu/steps.cpp", "csrc/cpu/gmm.cpp", "csrc/cpu/group_norm.cpp",
               "csrc/cpu/winograd.cpp"]
CUDA_SOURCES = ["csrc/cuda/kernels.cu", "csrc/cuda/ops_cuda.cpp"]


def source_hash() -> str:
    """The same hash as diffcore.native.source_hash (it tells a stale prebuilt library)."""
    files = []
    for d, _, names in os.walk(CSRC):
        files += [os.path.join(d, f) for f in names if f.endswith((".h", ".cpp", ".cu"))]
    files.sort(key=lambda p: os.path.relpath(p, CSRC).replace(os.sep, "/"))
    h = hashlib.sha256()
    for p in files:
        h.update(os.path.relpath(p, CSRC).replace(os.sep, "/").encode() + b"\0")
        with open(p, "rb") as f:
            h.update(f.read() + b"\0")
    return h.hexdigest()[:16]


def _note(msg: str) -> None:
    print(f"diffcore setup: {msg}", file=sys.stderr, flush=True)


def extension_config():
    if os.environ.get("DIFFCORE_NO_EXT") == "1":
        _note("DIFFCORE_NO_EXT=1: building without the C++/CUDA extension")
        return {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except Exception as e:  # no torch in the build environment: pure-Python install
        _note(f"torch is not importable ({e}); building without the extension (it will JIT-compile on first use)")
        return {}
    with_cuda = (torch.version.cuda is not None and CUDA_HOME is not None
                 and os.environ.get("DIFFCORE_NO_CUDA") != "1")
    if with_cuda:
        os.environ["TORCH_CUDA_ARCH_LIST"] = os.environ.get("DIFFCORE_CUDA_ARCH") or \
            os.environ.get("TORCH_CUDA_ARCH_LIST") or "8.0;9.0"
    cxx = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", f"-DDIFFCORE_SOURCE_HASH={source_hash()}"]
    if os.environ.get("DIFFCORE_NATIVE_ARCH") == "1":
        cxx.append("-march=native")
    if with_cuda:
        cxx.append("-DDIFFCORE_WITH_CUDA")
        ext = CUDAExtension("diffcore._C", CPU_SOURCES + CUDA_SOURCES,
                            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
                            extra_link_args=["-fopenmp"])
    else:
        ext = CppExtension("diffcore._C", CPU_SOURCES, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])

    class Build(BuildExtension):
        """A failed compile leaves a pure-Python install (unless DIFFCORE_FORCE_EXT=1)."""

        def build_extension(self, e):
            try:
                super().build_extension(e)
            except Exception as err:
                if os.environ.get("DIFFCORE_FORCE_EXT") == "1":
                    raise
                _note(f"building {e.name} failed ({type(err).__name__}: {err}); installing without it "
                      f"(diffcore.native will try a JIT build, else ops use the torch reference)")

    _note(f"building diffcore._C ({'CPU + CUDA ' + os.environ['TORCH_CUDA_ARCH_LIST'] if with_cuda else 'CPU'})")
    return {"ext_modules": [ext], "cmdclass": {"build_ext": Build.with_options(use_ninja=True)}}


setup(**extension_config())
