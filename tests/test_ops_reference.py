"""The op table's reference backend against the sampler steps it stands for.

diffcore.ops + diffcore.step_coeffs must reproduce each reference step of diffcore.samplers
(which the GMM tests prove correct); the fast backends are then tested against these ops.
"""
import math

import pytest
import torch

import diffcore
from diffcore import noise as N
from diffcore import ops, step_coeffs
from diffcore.samplers import ancestral, ddim, ode, pc

SHAPE = (5, 3, 7, 4)


def rand(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def test_group_norm_silu_matches_torch_modules():
    x, emb = rand(*SHAPE), rand(5, 3, seed=1)
    w, b = rand(3, seed=2), rand(3, seed=3)
    ref = torch.nn.functional.silu(torch.nn.functional.group_norm(x + emb[:, :, None, None], 3, w, b, 1e-5))
    torch.testing.assert_close(ops.group_norm_silu(x, 3, w, b, emb=emb, backend="torch"), ref)
    plain = torch.nn.functional.group_norm(x, 1, None, None, 1e-6)
    torch.testing.assert_close(ops.group_norm_silu(x, 1, eps=1e-6, silu=False, backend="torch"), plain)


def test_group_norm_silu_half_input_keeps_dtype_and_uses_fp32_stats():
    x = (rand(2, 4, 3, 3) * 3 + 100).to(torch.bfloat16)  # a large mean: bf16 statistics would fail
    y = ops.group_norm_silu(x, 2, backend="torch")
    assert y.dtype == torch.bfloat16
    ref = torch.nn.functional.silu(torch.nn.functional.group_norm(x.double(), 2))
    torch.testing.assert_close(y.double(), ref, atol=2e-2, rtol=1e-2)


def test_residual_add():
    s, h = rand(*SHAPE), rand(*SHAPE, seed=1)
    torch.testing.assert_close(ops.residual_add(s, h, 1 / math.sqrt(2), backend="torch"), (s + h) / math.sqrt(2))


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_step_matches_sampler(variance, clip):
    proc = diffcore.DDPM(diffcore.schedules.linear_betas(50), variance=variance)
    x = rand(*SHAPE)
    C = SHAPE[1]
    out = rand(SHAPE[0], 2 * C, *SHAPE[2:], seed=1) if variance == "learned_range" else rand(*SHAPE, seed=1)
    out = out.clamp(-1, 1) if variance == "learned_range" else out
    z = rand(*SHAPE, seed=2)
    t = torch.tensor([0, 1, 17, 49, 3])
    ref, ref_mean, ref_x0 = ancestral.ddpm_step(proc, out, t, x, z, clip)
    eps, v = proc.split_output(out, x)
    got, mean, x0 = ops.ddpm_step(x, eps, **step_coeffs.ddpm(proc, t), v=v, clip_denoised=clip, noise=z, backend="torch")
    for a, b in ((got, ref), (mean, ref_mean), (x0, ref_x0)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_matches_sampler(eta):
    proc = diffcore.DDPM(diffcore.schedules.linear_betas(40))
    x, eps, z = rand(*SHAPE), rand(*SHAPE, seed=1), rand(*SHAPE, seed=2)
    t, t_prev = torch.tensor([39, 20, 5, 1, 0]), torch.tensor([30, 10, 0, 0, -1])
    ref, ref_x0 = ddim.ddim_step(proc, eps, t, t_prev, x, eta, z, True)
    got, x0 = ops.ddim_step(x, eps, **step_coeffs.ddim(proc, t, t_prev, eta), clip_denoised=True, noise=z, backend="torch")
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x0, ref_x0, rtol=1e-12, atol=1e-12)


SDES = [diffcore.VESDE(N=100), diffcore.VPSDE(N=100), diffcore.SubVPSDE(N=100)]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("kind", ["euler_maruyama", "reverse_diffusion", "ancestral", "probability_flow"])
def test_predictors_match_sampler(sde, kind):
    if kind == "ancestral" and isinstance(sde, diffcore.SubVPSDE):
        with pytest.raises(ValueError, match="ancestral"):
            step_coeffs.predictor(sde, torch.full((5,), 0.5), kind)
        return
    x, s, z = rand(*SHAPE), rand(*SHAPE, seed=1), rand(*SHAPE, seed=2)
    t = torch.tensor([1.0, 0.73, 0.5, 0.1, 1e-3], dtype=torch.float64)
    dt = -1 / sde.N
    if kind == "euler_maruyama":
        ref = pc.euler_maruyama_step(sde, x, t, s, z, dt)
    elif kind == "reverse_diffusion":
        ref = pc.reverse_diffusion_step(sde, x, t, s, z)
    elif kind == "ancestral":
        ref = pc.ancestral_step(sde, x, t, s, z)
    else:
        ref = (x + sde.probability_flow_drift(x, t, s) * dt,) * 2
    got = ops.affine_step(x, s, **step_coeffs.predictor(sde, t, kind, dt), noise=z, backend="torch")
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_heun_matches_ode_solver(sde):
    x = rand(*SHAPE)
    t = torch.tensor([1.0, 0.73, 0.5, 0.1, 0.3], dtype=torch.float64)
    h = -0.05
    score = lambda xx, tt: -xx * (1 + tt.reshape(-1, 1, 1, 1))  # noqa: E731  any smooth field
    f = lambda xx, tt: sde.probability_flow_drift(xx, tt, score(xx, tt))  # noqa: E731
    ref = ode.heun_step(f, x, t, h)
    st1, st2 = step_coeffs.heun(sde, t, h)
    s1 = score(x, t)
    x_pred, _ = ops.affine_step(x, s1, **st1, noise=torch.zeros_like(x), backend="torch")
    got = ops.heun_step(x, s1, x_pred, score(x_pred, t + h), **st2, backend="torch")
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("norm", ["per_sample", "batch"])
def test_langevin_matches_corrector(sde, norm):
    x, s, z = rand(*SHAPE), rand(*SHAPE, seed=1), rand(*SHAPE, seed=2)
    t = torch.tensor([1.0, 0.73, 0.5, 0.1, 0.3], dtype=torch.float64)
    ref = pc.langevin_corrector_step(sde, x, t, s, z, 0.16, norm)
    got = ops.langevin_step(x, s, step_coeffs.langevin_alpha(sde, t), 0.16, norm=norm, noise=z, backend="torch")
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_counter_noise_address_equals_generator():
    x, s = rand(*SHAPE, dtype=torch.float32), rand(*SHAPE, dtype=torch.float32, seed=1)
    idx = torch.tensor([3, 0, 9, 4, 100])
    got, mean = ops.affine_step(x, s, 1.0, 0.5, 2.0, seed=7, sample_idx=idx, step=11, stream=N.STREAM_CORRECTOR,
                                backend="torch")
    z = N.normal(7, idx, 11, SHAPE[1:], N.STREAM_CORRECTOR)
    torch.testing.assert_close(got, mean + 2.0 * z)


@pytest.mark.parametrize("call, match", [
    (lambda: ops.group_norm_silu(torch.zeros(2, 6, 3), 4), "num_groups"),
    (lambda: ops.group_norm_silu(torch.zeros(2, 6, 3), 3, weight=torch.ones(5)), "weight"),
    (lambda: ops.group_norm_silu(torch.zeros(2, 6, 3), 3, emb=torch.ones(2, 5)), "emb"),
    (lambda: ops.group_norm_silu(torch.zeros(2, 6, dtype=torch.int64), 3), "x must be a floating"),
    (lambda: ops.residual_add(torch.zeros(2, 3), torch.zeros(2, 4)), "skip"),
    (lambda: ops.affine_step(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3), 0, 0, noise=torch.zeros(2, 3)), "a must"),
    (lambda: ops.affine_step(torch.zeros(2, 3), torch.zeros(2, 3), 1, 0, 0), "seed"),
    (lambda: ops.affine_step(torch.zeros(2, 3), torch.zeros(2, 3), 1, 0, 0, noise=torch.zeros(3, 3)), "noise"),
    (lambda: ops.langevin_step(torch.zeros(2, 3), torch.ones(2, 3), 1, 0.1, norm="x", noise=torch.zeros(2, 3)), "norm"),
    (lambda: ops.langevin_step(torch.zeros(2, 3), torch.ones(2, 3), 1, -1, noise=torch.zeros(2, 3)), "snr"),
    (lambda: ops.ddpm_step(torch.zeros(2, 3), torch.zeros(2, 3), 1, 1, 1, 1, 0, v=torch.zeros(2, 3), noise=torch.zeros(2, 3)), "log_var_max"),
    (lambda: ops.group_norm_silu(torch.zeros(2, 6, 3), 3, backend="cuda"), "backend"),
])
def test_bad_op_arguments_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_unknown_backend_from_environment(monkeypatch):
    monkeypatch.setenv("DIFFCORE_BACKEND", "fastest")
    with pytest.raises(ValueError, match="DIFFCORE_BACKEND"):
        ops.residual_add(torch.zeros(2), torch.zeros(2))
