"""Packaging: kernels/ ships as diffcore.kernels, never as a top-level `kernels` module."""
import pathlib
import subprocess
import sys
import zipfile

import importlib.util
import os

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_kernels_subpackage_maps_to_kernels_dir():
    # find_spec, not import: importing diffcore.kernels needs triton
    assert pathlib.Path(importlib.util.find_spec("diffcore.kernels").origin).resolve() == ROOT / "kernels" / "__init__.py"


def test_wheel_has_no_top_level_kernels(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "DIFFCORE_NO_EXT": "1"})  # the layout, not the C++ build (minutes)
    assert r.returncode == 0, r.stderr
    wheel, = tmp_path.glob("diffcore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "diffcore/kernels/__init__.py" in names
    assert "diffcore/samplers/pc.py" in names
    assert "diffcore/models/unet.py" in names and "diffcore/commands/train.py" in names
    # the embedded model and the eval classifier ship inside the package, the model under 10 MB
    for asset in ("digits-ddpm/model.safetensors", "digits-ddpm/model.json", "digits-ddpm/MODEL_CARD.md",
                  "digits-classifier/model.safetensors", "digits-classifier/model.json"):
        assert f"diffcore/assets/{asset}" in names, asset
    assert zipfile.ZipFile(wheel).getinfo("diffcore/assets/digits-ddpm/model.safetensors").file_size <= 10 * 2**20
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"diffcore", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
