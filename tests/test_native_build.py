"""The extension's build: every .cu file compiles with nvcc for sm_80 and sm_90 (skipped
without nvcc), the CUDA bindings parse against torch's headers, the loader's stale-library
and failure paths, and `import diffcore` compiling nothing."""
import glob
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
CU_FILES = sorted(glob.glob(os.path.join(CSRC, "**", "*.cu"), recursive=True))


def _nvcc():
    path = shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
                                    if os.environ.get("CUDA_HOME") else None)
    if not path or not os.path.exists(path):
        pytest.skip("nvcc not found")
    return path


def test_there_are_cuda_sources():
    assert CU_FILES, "csrc/ has no .cu files"


@pytest.mark.parametrize("cu", CU_FILES, ids=lambda p: os.path.relpath(p, CSRC))
def test_cu_compiles_for_sm80_and_sm90(cu, tmp_path):
    nvcc = _nvcc()
    cmd = [nvcc, "-c", "-std=c++17", "-O3", "-I", CSRC,
           "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
           cu, "-o", str(tmp_path / "k.o")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "warning" not in r.stderr.lower(), r.stderr[-4000:]


def test_cuda_bindings_parse_against_torch_headers(tmp_path):
    """csrc/cuda/ops_cuda.cpp (compiled by the host compiler in CUDA builds) type-checks
    against this torch's headers; a CPU torch lacks one generated CUDA header, stubbed here."""
    import torch.utils.cpp_extension as ce
    nvcc = shutil.which("nvcc")
    homes = [os.environ.get("CUDA_HOME"), ce.CUDA_HOME, "/usr/local/cuda",
             os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None]
    homes = [h for h in homes if h and os.path.exists(os.path.join(h, "include", "cuda_runtime.h"))]
    if not homes:
        pytest.skip("CUDA headers not found")
    cuda_home = homes[0]
    cxx = shutil.which("c++") or shutil.which("g++")
    if not cxx:
        pytest.skip("no C++ compiler")
    stub = tmp_path / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    inc = ce.include_paths()
    cmd = [cxx, "-fsyntax-only", "-std=c++20", "-DDIFFCORE_WITH_CUDA", "-I", str(tmp_path)]
    cmd += sum((["-I", p] for p in inc), []) + ["-I", os.path.join(cuda_home, "include"),
                                                 os.path.join(CSRC, "cuda", "ops_cuda.cpp")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]


def _run(code, **env):
    e = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=e, cwd=ROOT)


def test_import_diffcore_compiles_nothing_and_loads_no_extension():
    r = _run("import sys, diffcore; assert 'diffcore.native' not in sys.modules; "
             "import torch; assert not hasattr(torch.ops, 'diffcore') or 'build_info' not in dir(torch.ops.diffcore)")
    assert r.returncode == 0, r.stderr
    assert "compiling" not in r.stderr


def test_no_ext_switch_gives_import_error_and_ops_fall_back():
    code = ("import warnings, torch, diffcore\n"
            "from diffcore import ops\n"
            "try:\n    import diffcore.native\nexcept ImportError as e:\n    print('IMPORTERROR', e)\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    x = torch.randn(2, 4, 3)\n"
            "    y = ops.group_norm_silu(x, 2)\n"
            "    y = ops.group_norm_silu(x, 2)\n"
            "    print('WARNINGS', sum('native backend is unavailable' in str(m.message) for m in w))\n"
            "print('BACKEND', ops.resolve('group_norm_silu', x.device))\n")
    r = _run(code, DIFFCORE_NO_EXT="1")
    assert r.returncode == 0, r.stderr
    assert "IMPORTERROR" in r.stdout and "DIFFCORE_NO_EXT" in r.stdout
    assert "WARNINGS 1" in r.stdout and "BACKEND torch" in r.stdout


def test_failed_jit_build_is_an_import_error(tmp_path):
    """Broken sources (DIFFCORE_CSRC: a copy of csrc/ that does not compile) -> ImportError
    naming the failure, after saying on stderr that it compiles."""
    src = tmp_path / "csrc"
    shutil.copytree(CSRC, src)
    for p in glob.glob(str(src / "**" / "*.cpp"), recursive=True):
        with open(p, "w") as f:
            f.write('#error "deliberately broken"\n')   # fails at once, before any torch header
    r = _run("import diffcore.native", DIFFCORE_CSRC=str(src), DIFFCORE_EXT_DIR=str(tmp_path / "cache"))
    assert r.returncode != 0
    assert "ImportError: compiling the native extension failed" in r.stderr, r.stderr[-3000:]
    assert "deliberately broken" in r.stderr
    assert "diffcore: compiling the native extension" in r.stderr


def test_setup_py_and_native_agree_on_the_source_hash():
    import importlib.util
    spec = importlib.util.spec_from_file_location("diffcore_setup_probe", os.path.join(ROOT, "setup.py"))
    text = open(os.path.join(ROOT, "setup.py")).read()
    ns = {"__file__": os.path.join(ROOT, "setup.py"), "__name__": "not_main"}
    exec(compile(text.split("\nsetup(")[0], "setup.py", "exec"), ns)   # definitions only, no build
    from diffcore import native
    assert ns["source_hash"]() == native.source_hash()
    assert ns["CPU_SOURCES"] == [os.path.relpath(p, ROOT) for p in native.cpu_sources()]
    assert ns["CUDA_SOURCES"] == [os.path.relpath(p, ROOT) for p in native.cuda_sources()]
    assert spec is not None
