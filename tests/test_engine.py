"""The engine (diffcore.engine.Sampler / diffcore.sample): every method's fused plan against
the reference sampler, chunking and offsets, precision, check_finite, progress, CUDA graphs."""
import io

import pytest
import torch

import diffcore
from diffcore import noise as _noise
from diffcore import schedules
from diffcore.engine import NonFiniteError, Sampler
from diffcore.sampling import reference_sample

GM = diffcore.GaussianMixture([[4.0, 0.0], [-4.0, 0.0]], 0.5, [0.8, 0.2])
DDPM = diffcore.DDPM(schedules.linear_betas(100))
NCSN = diffcore.NCSN(schedules.geometric_sigmas(8.0, 0.1, 5))


def _native_present():
    try:
        from diffcore import native
        return native.available(torch.device("cpu"))
    except Exception:
        return False


BACKENDS = ["torch", pytest.param("native", marks=pytest.mark.skipif(not _native_present(), reason="diffcore._C not built"))]


def _cases():
    out = []
    for var in ("fixed_small", "fixed_large"):
        p = diffcore.DDPM(schedules.linear_betas(100), variance=var)
        out.append((f"ancestral-{var}", p, "ancestral", 20, {}))
    out.append(("ancestral-clip", DDPM, "ancestral", None, {"clip_denoised": True}))
    out.append(("ddim", DDPM, "ddim", 10, {}))
    out.append(("ddim-eta1-clip", DDPM, "ddim", 10, {"eta": 1.0, "clip_denoised": True}))
    for sde in (diffcore.VESDE(N=30), diffcore.VPSDE(N=30), diffcore.SubVPSDE(N=30)):
        name = type(sde).__name__
        for pred in ("euler_maruyama", "reverse_diffusion", "ancestral", "none"):
            if pred == "ancestral" and name == "SubVPSDE":
                continue
            for corr in ("langevin", "ald", "none"):
                if pred == corr == "none":
                    continue
                out.append((f"pc-{name}-{pred}-{corr}", sde, "pc", None, {"predictor": pred, "corrector": corr}))
        out.append((f"pc-{name}-batchnorm-2corr", sde, "pc", 25, {"norm": "batch", "corrector_steps": 2}))
        for solver in ("euler", "heun"):
            out.append((f"ode-{name}-{solver}", sde, "ode", 20, {"solver": solver}))
    out.append(("annealed", NCSN, "annealed_langevin", 8, {}))
    out.append(("annealed-no-denoise", NCSN, "annealed_langevin", 8, {"denoise": False}))
    out.append(("langevin", NCSN, "langevin", 30, {}))
    out.append(("langevin-on-ddpm", DDPM, "langevin", 10, {"init": "prior"}))
    return out


CASES = _cases()


@pytest.mark.parametrize("name,process,method,steps,opts", CASES, ids=[c[0] for c in CASES])
def test_fused_plan_equals_the_reference_sampler_in_float64(name, process, method, steps, opts):
    """On the torch ops, each plan computes the reference's formulas: equal to float64 rounding."""
    args = dict(n=5, shape=(2,), method=method, steps=steps, seed=11, dtype=torch.float64, **opts)
    ref, ref_info = reference_sample(GM.model(process), process, return_info=True, **args)
    got, info = diffcore.sample(GM.model(process), process, backend="torch", return_info=True, **args)
    assert info["path"] == "fused" and info["nfe"] == ref_info["nfe"]
    torch.testing.assert_close(got, ref, rtol=1e-11, atol=1e-11)


@pytest.mark.skipif(not _native_present(), reason="diffcore._C not built")
@pytest.mark.parametrize("name,process,method,steps,opts",
                         [c for c in CASES if "langevin" not in c[0] and "annealed" not in c[0]],
                         ids=[c[0] for c in CASES if "langevin" not in c[0] and "annealed" not in c[0]])
def test_native_plan_matches_the_reference_in_float32(name, process, method, steps, opts):
    """The native ops draw the same noise in-kernel (float32 Box-Muller): float32 tolerance.
    (Langevin-corrected runs amplify rounding chaotically over many steps; they are compared
    in float64 above and step by step in the op tests.)"""
    args = dict(n=6, shape=(3,), method=method, steps=steps, seed=3, **opts)
    ref = reference_sample(GM3.model(process), process, **args)
    got = diffcore.sample(GM3.model(process), process, backend="native", **args)
    scale = 1 + ref.abs()
    assert ((got - ref).abs() / scale).max() < 2e-5


GM3 = diffcore.GaussianMixture([[2.0, 0.0, 1.0], [-2.0, 1.0, 0.0]], 0.5, [0.7, 0.3])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method,process,opts", [("ancestral", DDPM, {}), ("pc", diffcore.VPSDE(N=25), {}),
                                                 ("ddim", DDPM, {"eta": 0.5})])
def test_samples_do_not_depend_on_chunking_or_offset(backend, method, process, opts):
    model = GM.model(process)
    whole = diffcore.sample(model, process, n=9, shape=(2,), method=method, steps=25, seed=4, backend=backend, **opts)
    chunked = diffcore.sample(model, process, n=9, shape=(2,), method=method, steps=25, seed=4, backend=backend,
                              max_batch=4, **opts)
    tail = diffcore.sample(model, process, n=4, shape=(2,), method=method, steps=25, seed=4, backend=backend,
                           start=5, max_batch=3, **opts)
    assert torch.equal(whole, chunked)
    assert torch.equal(whole[5:], tail)


def test_unet_samples_equal_chunked_and_unchunked():
    from diffcore.models import UNet, UNetConfig
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, resolution=8, ch=8, ch_mult=(1, 2), num_res_blocks=1,
                          attn_resolutions=(), num_groups=4, dropout=0.0)).eval()
    args = dict(n=5, shape=(1, 8, 8), method="ddim", steps=3, seed=2)
    whole = diffcore.sample(net, DDPM, **args)
    chunked = diffcore.sample(net, DDPM, max_batch=2, **args)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)  # convolutions may pick per-batch algorithms


def test_precision_runs_the_network_in_bf16_and_keeps_fp32_state():
    seen = []

    def model(x, t):
        y = torch.nn.functional.linear(x, torch.eye(2))  # autocast casts linear to bf16
        seen.append((x.dtype, y.dtype))
        return GM.model(DDPM)(x, t)

    x = diffcore.sample(model, DDPM, n=4, shape=(2,), method="ddim", steps=3, precision="bf16")
    assert x.dtype == torch.float32
    assert seen and all(s == (torch.float32, torch.bfloat16) for s in seen)
    ref = diffcore.sample(GM.model(DDPM), DDPM, n=4, shape=(2,), method="ddim", steps=3)
    torch.testing.assert_close(x, ref, rtol=0.05, atol=0.05)  # the mixture's score in bf16 inputs


def test_check_finite_names_the_step_and_the_sample():
    def model(x, t):
        out = GM.model(DDPM)(x, t)
        if int(t[0]) < 60:  # from the 5th of 10 steps (t = 90, 80, ...), sample 3 of this chunk goes bad
            out[3, 1] = float("nan")
        return out

    with pytest.raises(NonFiniteError) as e:
        diffcore.sample(model, DDPM, n=6, shape=(2,), method="ddim", steps=10, seed=0, check_finite=True, start=100)
    assert (e.value.step, e.value.sample_index) == (4, 103)
    assert "sample 103" in str(e.value) and "step 4" in str(e.value)


def test_without_check_finite_nan_passes_through():
    def model(x, t):
        out = GM.model(DDPM)(x, t)
        out[0] = float("nan")
        return out

    x = diffcore.sample(model, DDPM, n=2, shape=(2,), method="ddim", steps=2)
    assert torch.isnan(x[0]).all() and torch.isfinite(x[1]).all()


def test_progress_line_and_info(capsys):
    x, info = diffcore.sample(GM.model(DDPM), DDPM, n=4, shape=(2,), method="ancestral", steps=5, progress=True,
                              return_info=True, max_batch=2)
    err = capsys.readouterr().err
    assert "sample ancestral" in err and "10/10" in err
    assert info["chunks"] == 2 and info["max_batch"] == 2 and info["nfe"] == 5 and info["samples_per_s"] > 0


def test_methods_without_a_plan_run_the_reference():
    sde = diffcore.VPSDE(N=30)
    x, info = diffcore.sample(GM.model(sde), sde, n=3, shape=(2,), method="ode", seed=1, return_info=True)
    ref, rinfo = reference_sample(GM.model(sde), sde, n=3, shape=(2,), method="ode", seed=1, return_info=True)
    assert info["path"] == "reference" and torch.equal(x, ref)
    assert torch.equal(info["nfe_per_sample"], rinfo["nfe_per_sample"])


def test_sampler_object_reuses_its_plan():
    s = Sampler(GM.model(DDPM), DDPM, (2,), "ddim", 5)
    a = s.sample(4, seed=9)
    b = s(2, seed=9, start=2)
    assert torch.equal(a[2:], b)


@pytest.mark.parametrize("kw,msg", [
    ({"precision": "fp8"}, r"precision must be one of"),
    ({"backend": "cuda"}, r"backend must be one of"),
    ({"max_batch": 0}, r"max_batch must be >= 1"),
    ({"cuda_graph": "yes"}, r"cuda_graph must be one of"),
    ({"dtype": torch.float64, "precision": "bf16"}, r"dtype must be torch.float32"),
    ({"batch_size": 2, "max_batch": 3}, r"batch_size and max_batch name the same thing"),
    ({"shape": (2, 0)}, r"shape must be a tuple of positive ints"),
    ({"device": "nosuch"}, r"device must be a torch device"),
])
def test_engine_arguments_are_checked(kw, msg):
    args = dict(n=2, shape=(2,), method="ddim", steps=2)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        diffcore.sample(GM.model(DDPM), DDPM, **args)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method,process,opts", [("ancestral", DDPM, {}), ("pc", diffcore.VPSDE(N=30), {}),
                                                 ("ode", diffcore.VPSDE(N=30), {"solver": "heun"})])
def test_cuda_graph_replay_equals_eager_steps(method, process, opts):
    model = GM.model(process)
    args = dict(n=64, shape=(2,), method=method, steps=30, seed=1, device="cuda", **opts)
    g, info = diffcore.sample(model, process, cuda_graph=True, return_info=True, **args)
    e = diffcore.sample(model, process, cuda_graph=False, **args)
    assert info["cuda_graph"]
    torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)  # graph noise: the reference generator's


def _learned_range_model(process):
    eps_model = GM.model(process)

    def model(x, t):  # the mixture's [eps, v], with a variance interpolant v in (-1, 1) varying per element
        eps, _ = eps_model(x, t).chunk(2, dim=1)
        return torch.cat([eps, torch.tanh(x)], dim=1)
    return model


@pytest.mark.parametrize("backend", BACKENDS)
def test_learned_range_variance_matches_the_reference(backend):
    p = diffcore.DDPM(schedules.cosine_betas(100), variance="learned_range")
    args = dict(n=5, shape=(2,), method="ancestral", steps=10, seed=7, dtype=torch.float64)
    ref = reference_sample(_learned_range_model(p), p, **args)
    got = diffcore.sample(_learned_range_model(p), p, backend=backend, **args)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)  # native noise: float32 Box-Muller


@pytest.mark.parametrize("method,process,opts", [("ancestral", DDPM, {"clip_denoised": True}),
                                                 ("pc", diffcore.VESDE(N=25), {}),
                                                 ("ode", diffcore.SubVPSDE(N=25), {"solver": "heun"})])
def test_triton_plan_matches_the_reference(method, process, opts):
    """The Triton kernels (under TRITON_INTERPRET=1 here) inside the engine, noise drawn in-kernel."""
    pytest.importorskip("triton")
    args = dict(n=3, shape=(2, 3), method=method, steps=25, seed=5, **opts)
    gm = diffcore.GaussianMixture(torch.randn(2, 2, 3, generator=torch.Generator().manual_seed(0)).flatten(1),
                                  0.5, [0.6, 0.4])
    model = _reshaping(gm.model(process))
    ref = reference_sample(model, process, **args)
    try:
        got = diffcore.sample(model, process, backend="triton", **args)
    except RuntimeError as e:
        if "cannot run" in str(e):
            pytest.skip(f"triton backend not runnable here: {e}")
        raise
    assert ((got - ref).abs() / (1 + ref.abs())).max() < 1e-4


def _reshaping(flat_model):
    def model(x, t):  # a 6-dim mixture seen as [B, 2, 3] samples
        return flat_model(x.flatten(1), t).view_as(x)
    return model


def test_failed_capture_restores_the_stream_warns_once_and_is_not_retried(monkeypatch):
    """Without a GPU: _Graph raises the way torch's capture_end does (its own error, the op that
    broke the capture as __context__); the stream current before is made current again."""
    from diffcore import engine
    calls, streams = [], []

    def broken_graph(*a):
        calls.append(1)
        try:
            raise RuntimeError("operation not permitted when stream is capturing")
        except RuntimeError:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")

    monkeypatch.setattr(engine, "_Graph", broken_graph)
    monkeypatch.setattr(engine, "_warned_capture", False)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: "the caller's stream")
    monkeypatch.setattr(torch.cuda, "set_stream", streams.append)

    class Plan:
        pass
    plan = Plan()
    with pytest.warns(RuntimeWarning, match="operation not permitted when stream is capturing"):
        assert engine._capture(plan, None, None, 0, None) is None
    assert streams == ["the caller's stream"] and plan._capture_failed
    assert engine._capture(plan, None, None, 0, None) is None   # not tried again for this plan
    assert len(calls) == 1
