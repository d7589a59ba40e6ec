"""The `diffcore` command as a user runs it."""
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "diffcore", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def _png_size_and_pixels(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    assert len(raw) == h * (1 + 3 * w)
    return w, h, raw


@pytest.mark.parametrize("method", ["pc", "ancestral"])
def test_gmm_demo_writes_png_and_reports_weights(tmp_path, method):
    out = tmp_path / "sub"
    r = _run("sample", "--model", "gmm", "--method", method, "--n", "4000", "--steps", "200", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"wrote {out / 'samples.png'}" in r.stdout
    report = json.loads(r.stdout[:r.stdout.rindex("}") + 1])
    assert abs(report["weights"][0] - 0.8) < 0.03
    assert json.loads((out / "run.json").read_text())["n"] == 4000
    w, h, raw = _png_size_and_pixels(out / "samples.png")
    assert (w, h) == (512, 512)
    assert len(set(raw)) > 10  # not a blank image
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_sample_with_no_arguments_samples_the_embedded_model(tmp_path):
    r = _run("sample", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    png = tmp_path / "samples" / "samples.png"
    assert f"wrote {png}" in r.stdout
    w, h, raw = _png_size_and_pixels(png)
    assert w == h and w >= 64 and len(set(raw)) > 10
    u8 = np.load(tmp_path / "samples" / "samples.npz")["arr_0"]
    assert u8.shape == (64, 8, 8, 1) and u8.dtype == np.uint8 and u8.std() > 10
    run = json.loads((tmp_path / "samples" / "run.json").read_text())
    assert run["family"] == "ddpm" and run["method"] == "ddim" and run["samples_per_s"] > 0


@pytest.mark.parametrize("args,needle", [
    (["sample", "--n", "0"], "--n must be >= 1"),
    (["train", "--out", "x", "--steps", "0"], "--steps must be >= 1"),
    (["train", "--out", "x", "--network", "[1]"], "--network must be a JSON object"),
    (["train"], "--out"),
    (["eval", "--n", "-1"], "--n must be >= 1"),
    (["sample", "--steps", "-5"], "--steps must be >= 1"),
    (["sample", "--method", "dpm"], "invalid choice"),
    (["sample", "--bogus"], "unrecognized arguments"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_exit_2(args, needle):
    r = _run(*args)
    assert r.returncode == 2
    assert needle in r.stderr


def test_sampler_value_error_exits_2_with_message(tmp_path):
    # 5 VP steps leave no discrete chain for the default corrector-free reverse-diffusion predictor.
    r = _run("sample", "--model", "gmm", "--steps", "5", "--n", "10", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "needs N > beta_max" in r.stderr
    assert not (tmp_path / "x" / "samples.png").exists()


def test_missing_model_and_pickle_model_exit_2(tmp_path):
    r = _run("sample", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "model.json" in r.stderr
    r = _run("sample", "--model", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "safetensors only" in r.stderr


def test_info():
    r = _run("info")
    assert r.returncode == 0
    info = json.loads(r.stdout)
    assert "pc" in info["methods"] and info["backends"]["torch"]["available"] is True
    assert set(info["backends"]) == {"torch", "native", "triton"}
    assert set(info["cpu_backend_per_op"].values()) <= {"torch", "native"}
    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert (info["cpu_bf16"] == "oneDNN") == native_bf16 and info["cpu_bf16"].startswith("widened") != native_bf16
    from diffcore import winograd
    native = info["backends"]["native"]["available"]
    assert info["cpu_conv3x3"].startswith("Winograd" if native else "oneDNN")
    assert ("held to F(2x2)" in info["cpu_conv3x3"]) == (native and not winograd.FP32_F4)
    assert (f"cached up to {winograd.cache_limit_mb():.0f} MB" in info["cpu_conv3x3"]) == native


def test_likelihood_reports_ode_nll_beside_exact():
    r = _run("likelihood", "--model", "gmm", "--n", "32", "--process", "subvp")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["relative_error"] < 0.01
    assert abs(report["nll_nats"] - report["exact_nll_nats"]) < 0.01 * abs(report["exact_nll_nats"])
    assert report["nfe_per_sample_mean"] > 0


def test_likelihood_of_heldout_digits_under_the_embedded_model():
    """Bits/dim of dequantized held-out digits through the VP probability-flow ODE of the
    embedded DDPM: a real density beats the uniform one over the 17 grey levels (log2 17)."""
    import math
    r = _run("likelihood", "--n", "2", "--tol", "1e-3")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["dequantized"] and report["dequantization_offset_bits"] == 3.0
    assert 0 < report["bits_per_dim"] < math.log2(17), report
    assert report["nfe_per_sample_mean"] > 10


def test_eval_reports_floor_and_ceiling_beside_the_model(tmp_path):
    r = _run("sample", "--n", "100", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    r = _run("eval", "--samples", str(tmp_path / "samples.npz"))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["n"] == 100 and rep["real_vs_real_floor"] < rep["frechet_distance"] < rep["noise_ceiling"]
    assert len(rep["classes_histogram"]) == 10
    r = _run("eval", "--samples", str(tmp_path / "samples.npz"), "--fid", str(tmp_path / "missing.npz"))
    assert r.returncode == 2 and "does not exist" in r.stderr


@pytest.mark.parametrize("method,steps", [("pc", "200"), ("ode", "20")])
def test_sde_samplers_on_the_embedded_ddpm(tmp_path, method, steps):
    """The DDPM is sampled as its VP SDE by pc and ode (Heun when --steps is given)."""
    r = _run("sample", "--method", method, "--steps", steps, "--n", "4", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    u8 = np.load(tmp_path / "samples.npz")["arr_0"]
    assert u8.shape == (4, 8, 8, 1) and u8.std() > 10
