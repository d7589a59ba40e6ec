"""Packaging: kernels/ ships as diffcore.kernels, never as a top-level `kernels` module."""
import pathlib
import subprocess
import sys
import zipfile

import diffcore.kernels

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_kernels_subpackage_maps_to_kernels_dir():
    assert pathlib.Path(diffcore.kernels.__file__).resolve() == ROOT / "kernels" / "__init__.py"


def test_wheel_has_no_top_level_kernels(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    wheel, = tmp_path.glob("diffcore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "diffcore/kernels/__init__.py" in names
    assert "diffcore/samplers/pc.py" in names
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"diffcore", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
