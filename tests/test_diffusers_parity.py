"""Parity of diffcore's step functions with diffusers' schedulers, on the same inputs and the
same noise: DDPM ancestral steps (three variances, clipping, respacing), DDIM steps (eta 0
and 1), the VE SDE's reverse-diffusion predictor and Langevin corrector, and whole loops
driven both ways with the closed-form Gaussian-mixture model.

Two tiers of comparison, each test naming its tolerance:

* float64 (the exact tier). diffusers' own step code runs unchanged, but on its schedule
  held in float64: the same float32-rounded betas diffusers builds (`scheduler.betas`),
  promoted, with the cumulative products taken in float64 (`_promote_ddpm`,
  `_ddim_scheduler(f64=True)`, `_ve(f64=True)` below). Ours is
  built from exactly those betas (`scheduler.betas.double()`), so both sides compute the
  same formulas on the same numbers; they must agree to ~1e-12 (a few float64 ulps).
  Building ours from `diffcore.schedules.linear_betas()` instead would be off by ~2e-7
  relative in alpha_bar (the float32 rounding of diffusers' linspace), see
  `test_linear_betas_are_diffusers_betas_to_float32_rounding`.

* float32 (stock diffusers, nothing changed). diffusers keeps its schedule in float32 and
  forms 1 - abar_t, 1 - abar_prev and beta'_t = 1 - abar_t / abar_prev in float32; near t = 0
  these cancel (1 - abar_1 ~ 2e-4), so at t = 1, 2 its step moves by up to ~4e-4 from the
  float64 answer, while ours (float64 schedule cast at the step, float32 data) stays within
  ~3e-7 of it. The DDPM float32 tolerance is therefore atol = 1e-5 + eps32 max|x| / (1 - abar_t)
  (measured errors are at most ~1/4 of it); elsewhere atol = 1e-5, taken relative to the
  data's scale where the data are large (the VE SDE's x ~ sigma up to sigma_max = 50).
"""
import logging
import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import diffcore  # noqa: E402
from diffcore.discrete import spaced_timesteps  # noqa: E402
from diffcore.noise import NoiseSource  # noqa: E402
from diffcore.samplers.ancestral import ddpm_step  # noqa: E402
from diffcore.samplers.ddim import ddim_step  # noqa: E402
from diffcore.samplers.pc import langevin_corrector_step, reverse_diffusion_step  # noqa: E402

# diffusers' randn_tensor logs at INFO about CPU generators; keep the test output clean.
logging.getLogger("diffusers").setLevel(logging.ERROR)

T = 1000
SHAPE = (3, 3, 5, 7)           # [B, C, H, W], small and odd
EPS32 = torch.finfo(torch.float32).eps
TIGHT = 1e-12                  # float64 tier: a few ulps of values of order 1-10
VARIANCES = ("fixed_small", "fixed_large", "learned_range")
DDPM_TS = (0, 1, 2, 17, 500, 998, 999)


def _assert_close(ours, ref, atol, what=""):
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    assert torch.isfinite(ref).all() and torch.isfinite(ours).all()
    err = (ours.double() - ref.double()).abs().max().item()
    assert err <= atol, f"{what}: max |ours - diffusers| = {err:.3e} > {atol:.3e}"


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---- diffusers schedulers, optionally with their schedule promoted to float64 ----------------
def _promote_ddpm(s):
    """The same float32 betas, in float64; diffusers' step code then runs in float64."""
    s.betas = s.betas.double()
    s.alphas = 1.0 - s.betas
    s.alphas_cumprod = torch.cumprod(s.alphas, dim=0)
    s.one = torch.tensor(1.0, dtype=torch.float64)
    return s


def _ddpm_scheduler(variance="fixed_small", clip=False, f64=False, steps=None):
    s = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", variance_type=variance,
                                clip_sample=clip)
    if f64:
        _promote_ddpm(s)
    if steps is not None:
        s.set_timesteps(num_inference_steps=steps)
    return s


def _ddim_scheduler(clip=False, f64=False, steps=50):
    s = diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", clip_sample=clip,
                                set_alpha_to_one=True)
    if f64:
        s.betas = s.betas.double()
        s.alphas = 1.0 - s.betas
        s.alphas_cumprod = torch.cumprod(s.alphas, dim=0)
        s.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    s.set_timesteps(steps)
    return s


def _ours(s, variance="fixed_small"):
    """Our DDPM on diffusers' own (float32-rounded) betas, held in float64."""
    return diffcore.DDPM(s.betas.double(), variance=variance)


def _ddpm_inputs(variance, seed, dtype, shape=SHAPE):
    """(x, model_output): x ~ 1.5 N(0, I) so clipping of pred_x0 is active at small t;
    learned_range outputs [eps, v] with v uniform in [-1, 1]."""
    g = _gen(seed)
    x = 1.5 * torch.randn(shape, generator=g, dtype=dtype)
    eps = torch.randn(shape, generator=g, dtype=dtype)
    if variance == "learned_range":
        v = 2 * torch.rand(shape, generator=g, dtype=dtype) - 1
        return x, torch.cat([eps, v], dim=1)
    return x, eps


def _f32_ddpm_atol(process, i, x):
    """1e-5 + eps32 max|x| / (1 - abar_i): stock diffusers forms 1 - abar_t, 1 - abar_prev and
    1 - abar_t / abar_prev in float32, each off by ~eps32 absolute, i.e. by eps32 / (1 - abar_t)
    relative or more (abar_prev >= abar_t), and the step is a combination of terms of size |x|."""
    return 1e-5 + EPS32 * max(1.0, x.abs().max().item()) / (1.0 - process.alphas_cumprod[i].item())


# ---- 1. DDPM step -----------------------------------------------------------------------------
def test_linear_betas_are_diffusers_betas_to_float32_rounding():
    """diffusers' "linear" betas are float32 values; ours are float64. They agree to float32
    rounding (|diff| <= eps32 beta), and alpha_bar to ~2e-7 relative: invisible in float32, but
    far above the float64 tier's 1e-12, which is why that tier builds ours from scheduler.betas."""
    s = _ddpm_scheduler()
    assert s.betas.dtype == torch.float32
    ours = diffcore.schedules.linear_betas(T)
    ulp = torch.finfo(torch.float32).eps * ours.abs()
    assert ((s.betas.double() - ours).abs() <= ulp).all()
    abar_rel = ((_ours(s).alphas_cumprod - diffcore.DDPM(ours).alphas_cumprod) / diffcore.DDPM(ours).alphas_cumprod)
    assert abar_rel.abs().max() < 1e-6


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("variance", VARIANCES)
def test_ddpm_step_float64(variance, clip):
    """Tolerance: 1e-12 (float64 tier), at t = 0 (no noise), 1, 2, 17, 500, 998, 999."""
    s = _ddpm_scheduler(variance, clip, f64=True)
    p = _ours(s, variance)
    B = SHAPE[0]
    for t in DDPM_TS:
        x, out = _ddpm_inputs(variance, seed=t, dtype=torch.float64)
        ref = s.step(out, t, x, generator=_gen(1000 + t))
        noise = torch.randn(SHAPE, generator=_gen(1000 + t), dtype=torch.float64)
        x_prev, _, pred_x0 = ddpm_step(p, out, torch.full((B,), t, dtype=torch.int64), x, noise, clip)
        _assert_close(x_prev, ref.prev_sample, TIGHT, f"{variance} clip={clip} t={t} prev_sample")
        _assert_close(pred_x0, ref.pred_original_sample, TIGHT, f"{variance} clip={clip} t={t} pred_x0")


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("variance", VARIANCES)
def test_ddpm_step_float32_stock_diffusers(variance, clip):
    """Stock diffusers (float32 schedule), float32 data. Tolerance 1e-5 + eps32 max|x| / (1 - abar_t)
    (~3e-3 at t = 1, ~2e-3 at t = 2, ~1.1e-5 at t >= 500); measured errors are <= 1/4 of it.
    Ours alone is also checked against its float64 result: 1e-5 at every t."""
    s = _ddpm_scheduler(variance, clip)
    p = _ours(s, variance)
    B = SHAPE[0]
    for t in DDPM_TS:
        x, out = _ddpm_inputs(variance, seed=t, dtype=torch.float32)
        ref = s.step(out, t, x, generator=_gen(1000 + t)).prev_sample
        noise = torch.randn(SHAPE, generator=_gen(1000 + t))
        x_prev, _, _ = ddpm_step(p, out, torch.full((B,), t, dtype=torch.int64), x, noise, clip)
        assert x_prev.dtype == torch.float32
        _assert_close(x_prev, ref, _f32_ddpm_atol(p, t, x), f"{variance} clip={clip} t={t}")
        # ours in float32 is within 1e-5 of the float64 step (= diffusers' float64 step, above)
        exact, _, _ = ddpm_step(p, out.double(), torch.full((B,), t), x.double(), noise.double(), clip)
        _assert_close(x_prev, exact, 1e-5, f"{variance} clip={clip} t={t} ours float32 vs float64")


@pytest.mark.parametrize("variance", VARIANCES)
def test_ddpm_step_per_sample_timesteps_float64(variance):
    """A batch whose samples sit at different t equals diffusers stepping each sample alone
    (its own generator). Tolerance 1e-12."""
    s = _ddpm_scheduler(variance, clip=True, f64=True)
    p = _ours(s, variance)
    ts = [999, 0, 1, 431]
    shape = (len(ts),) + SHAPE[1:]
    x, out = _ddpm_inputs(variance, seed=7, dtype=torch.float64, shape=shape)
    refs, noises = [], []
    for b, t in enumerate(ts):
        refs.append(s.step(out[b:b + 1], t, x[b:b + 1], generator=_gen(50 + b)).prev_sample)
        noises.append(torch.randn((1,) + SHAPE[1:], generator=_gen(50 + b), dtype=torch.float64))
    x_prev, _, _ = ddpm_step(p, out, torch.tensor(ts), x, torch.cat(noises), True)
    _assert_close(x_prev, torch.cat(refs), TIGHT, f"{variance} per-sample t")


@pytest.mark.parametrize("steps", [20, 50])
@pytest.mark.parametrize("variance", VARIANCES)
def test_ddpm_respaced_step(variance, steps):
    """diffusers' set_timesteps(N) ("leading": prev_t = t - T//N) against our respaced chain at
    index i <-> timestep ts[i]. Its _get_variance uses beta'_t = 1 - abar_t / abar_prev and
    beta~'_t = (1 - abar_prev) / (1 - abar_t) beta'_t, i.e. exactly the respaced chain's
    betas and posterior variance, for learned_range too (min_log = log beta~', max_log =
    log beta'). Tolerances: 1e-12 (float64), 1e-5 + eps32 max|x| / (1 - abar_ts[i]) (stock float32)."""
    ts = spaced_timesteps(T, steps, "leading")
    for f64 in (True, False):
        dtype = torch.float64 if f64 else torch.float32
        s = _ddpm_scheduler(variance, clip=False, f64=f64, steps=steps)
        assert torch.equal(s.timesteps, ts.flip(0))
        chain = _ours(s, variance).respace(ts)
        assert torch.equal(chain.timestep_map, ts)
        for i in (0, 1, 2, steps // 2, steps - 1):
            t = int(ts[i])
            x, out = _ddpm_inputs(variance, seed=i, dtype=dtype)
            ref = s.step(out, t, x, generator=_gen(77 + i)).prev_sample
            noise = torch.randn(SHAPE, generator=_gen(77 + i), dtype=dtype)
            x_prev, _, _ = ddpm_step(chain, out, torch.full((SHAPE[0],), i, dtype=torch.int64), x, noise)
            atol = TIGHT if f64 else _f32_ddpm_atol(chain, i, x)
            _assert_close(x_prev, ref, atol, f"{variance} steps={steps} i={i} t={t} {dtype}")


# ---- 2. DDIM step -----------------------------------------------------------------------------
def _ddim_case(s, p, t, eta, clip, dtype, B=SHAPE[0]):
    g = _gen(t)
    x = 1.5 * torch.randn(SHAPE, generator=g, dtype=dtype)
    eps = torch.randn(SHAPE, generator=g, dtype=dtype)
    noise = torch.randn(SHAPE, generator=g, dtype=dtype)
    ref = s.step(eps, t, x, eta=eta, variance_noise=noise)
    t_prev = t - T // 50
    t_prev = -1 if t_prev < 0 else t_prev
    x_prev, pred_x0 = ddim_step(p, eps, torch.full((B,), t, dtype=torch.int64),
                                torch.full((B,), t_prev, dtype=torch.int64), x, eta, noise, clip)
    return ref, x_prev, pred_x0


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_float64(eta, clip):
    """Every timestep of set_timesteps(50), incl. t = 0 (t_prev = -1: abar = 1). Tolerance 1e-12."""
    s = _ddim_scheduler(clip=clip, f64=True)
    p = _ours(s)
    for t in s.timesteps.tolist():
        ref, x_prev, pred_x0 = _ddim_case(s, p, t, eta, clip, torch.float64)
        _assert_close(x_prev, ref.prev_sample, TIGHT, f"eta={eta} clip={clip} t={t} prev_sample")
        _assert_close(pred_x0, ref.pred_original_sample, TIGHT, f"eta={eta} clip={clip} t={t} pred_x0")


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_float32_stock_diffusers(eta):
    """Stock DDIMScheduler(clip_sample=False), float32. Tolerance 1e-5 (measured <= 2.1e-6)."""
    s = _ddim_scheduler(clip=False)
    p = _ours(s)
    for t in s.timesteps.tolist():
        ref, x_prev, _ = _ddim_case(s, p, t, eta, False, torch.float32)
        assert x_prev.dtype == torch.float32
        _assert_close(x_prev, ref.prev_sample, 1e-5, f"eta={eta} t={t}")


# ---- 3. whole loops with the closed-form mixture ------------------------------------------------
D, B_LOOP = 4, 6


@pytest.fixture(scope="module")
def gm4():
    return diffcore.GaussianMixture([[1.5, 0.0, -1.0, 0.5], [-1.0, 1.0, 0.5, -0.5], [0.0, -1.5, 1.0, 1.0]],
                                    [0.4, 0.6, 0.3], [0.5, 0.3, 0.2])


def _x_T(dtype):
    return torch.randn((B_LOOP, D), generator=_gen(123), dtype=dtype)


def _diffusers_ddim_loop(s, model, x):
    for t in s.timesteps:
        x = s.step(model(x, t.expand(x.shape[0])), t, x, eta=0.0).prev_sample
    return x


def test_ddim_loop_matches_diffusers_float32(gm4):
    """diffusers' 50-step DDIM loop (stock, float32) vs diffcore.sample(method="ddim", steps=50,
    eta=0, spacing default "leading"), model = gm.model(DDPM(linear_betas())).
    Tolerance 1e-5 absolute on samples of scale ~2 (50 float32 steps of both sides' rounding;
    measured 7e-7)."""
    ddpm = diffcore.DDPM(diffcore.schedules.linear_betas())
    model = gm4.model(ddpm)
    s = _ddim_scheduler(clip=False)
    x_T = _x_T(torch.float32)
    ref = _diffusers_ddim_loop(s, model, x_T)
    ours = diffcore.sample(model, ddpm, n=B_LOOP, shape=(D,), method="ddim", steps=50, eta=0.0, x_init=x_T)
    _assert_close(ours, ref, 1e-5, "ddim loop float32")


def test_ddim_loop_matches_diffusers_float64(gm4):
    """The same loop in float64 on diffusers' betas. Tolerance 1e-12 (measured 0)."""
    s = _ddim_scheduler(clip=False, f64=True)
    ddpm = _ours(s)
    model = gm4.model(ddpm)
    x_T = _x_T(torch.float64)
    ref = _diffusers_ddim_loop(s, model, x_T)
    ours = diffcore.sample(model, ddpm, n=B_LOOP, shape=(D,), method="ddim", steps=50, eta=0.0,
                           x_init=x_T, dtype=torch.float64)
    _assert_close(ours, ref, TIGHT, "ddim loop float64")


def _our_ancestral_loop(chain, model, x, noise_at):
    """x_T -> x_0 on a respaced chain with ddpm_step; noise_at(k, i) gives step k's noise."""
    B = x.shape[0]
    for k, i in enumerate(reversed(range(chain.T))):
        t = torch.full((B,), i, dtype=torch.int64)
        out = model(x, chain.timestep_map[t])
        x, _, _ = ddpm_step(chain, out, t, x, noise_at(k, i))
    return x


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ddpm_ancestral_loop_matches_diffusers(gm4, dtype):
    """diffusers' DDPMScheduler.set_timesteps(20) loop vs our ddpm_step on the respaced chain,
    fed the noise diffusers draws (one randn per step with t > 0, none at t = 0).
    Tolerance 1e-12 (float64) / 2e-5 (float32: 20 steps of diffusers' float32 schedule, whose
    last step from t = 50 cancels as in the single-step test; measured 2.3e-6)."""
    f64 = dtype == torch.float64
    s = _ddpm_scheduler("fixed_small", clip=False, f64=f64, steps=20)
    ddpm = _ours(s)
    model = gm4.model(ddpm)
    x_T = _x_T(dtype)
    g = _gen(2024)
    x = x_T
    for t in s.timesteps:
        x = s.step(model(x, t.expand(B_LOOP)), t, x, generator=g).prev_sample
    ref = x

    ts = spaced_timesteps(T, 20, "leading")
    assert torch.equal(s.timesteps, ts.flip(0))
    chain = ddpm.respace(ts)
    g2 = _gen(2024)

    def noise_at(k, i):
        return torch.randn((B_LOOP, D), generator=g2, dtype=dtype) if i > 0 else torch.zeros(B_LOOP, D, dtype=dtype)

    ours = _our_ancestral_loop(chain, model, x_T, noise_at)
    _assert_close(ours, ref, TIGHT if f64 else 2e-5, f"ancestral loop {dtype}")


def test_sample_ancestral_is_the_ddpm_step_loop(gm4):
    """The reference sampler (method="ancestral", steps=20) is the loop above on its own noise
    (NoiseSource step k), so the public API inherits the step-level parity. Tolerance 0
    (float64: same ops in the same order). The engine behind diffcore.sample runs the fused
    op on the fastest backend, whose in-op noise is float32 Box-Muller rounded its own way
    (within ~2.4 ulp of float32): 1e-6 there."""
    from diffcore.sampling import reference_sample
    ddpm = diffcore.DDPM(diffcore.schedules.linear_betas())
    model = gm4.model(ddpm)
    x_T = _x_T(torch.float64)
    args = dict(n=B_LOOP, shape=(D,), method="ancestral", steps=20, seed=5, x_init=x_T, dtype=torch.float64)
    ref = reference_sample(model, ddpm, **args)
    noise = NoiseSource(5, torch.arange(B_LOOP), (D,), dtype=torch.float64)
    chain = ddpm.respace(spaced_timesteps(T, 20, "leading"))
    loop = _our_ancestral_loop(chain, model, x_T, lambda k, i: noise.normal(k))
    _assert_close(ref, loop, 0.0, "reference_sample(ancestral) vs ddpm_step loop")
    _assert_close(diffcore.sample(model, ddpm, **args), loop, 1e-6, "sample(ancestral) vs ddpm_step loop")


# ---- 4. VE SDE: reverse-diffusion predictor and Langevin corrector -----------------------------
SNR = 0.16


def _ve(N, f64=False):
    """ScoreSdeVeScheduler as the brief sets it up. f64: discrete_sigmas recomputed with
    diffusers' own formula exp(linspace(log smin, log smax, N)) but in float64 (which is
    diffcore's VESDE.discrete_sigmas); diffusers still indexes them with float32 t."""
    s = diffusers.ScoreSdeVeScheduler(num_train_timesteps=N, snr=SNR, sigma_min=0.01, sigma_max=50.0,
                                      sampling_eps=1e-5)
    s.set_timesteps(N)
    s.set_sigmas(N)
    if f64:
        s.discrete_sigmas = torch.exp(torch.linspace(math.log(0.01), math.log(50.0), N, dtype=torch.float64))
    return s, diffcore.VESDE(sigma_min=0.01, sigma_max=50.0, N=N)


def _ve_inputs(sigma, seed, dtype):
    """x ~ sigma N(0, I) and a score of the matching scale ~ N(0, I) / sigma."""
    g = _gen(seed)
    x = sigma * torch.randn(SHAPE, generator=g, dtype=dtype)
    score = -torch.randn(SHAPE, generator=g, dtype=dtype) / sigma
    return x, score


@pytest.mark.parametrize("N", [100, 1000])
def test_ve_timestep_index_matches_diffusers(N):
    """diffusers: index = (t * (N - 1)).long() on float32 t = linspace(1, 1e-5, N). Ours
    (timestep_index) agrees on those t, and on pc.run's grid (float64 linspace cast to float32),
    and both give N-1-i at step i."""
    s, sde = _ve(N)
    ref = (s.timesteps * (N - 1)).long()
    assert torch.equal(ref, torch.arange(N - 1, -1, -1))
    assert torch.equal(sde.timestep_index(s.timesteps), ref)
    assert torch.equal(sde.timestep_index(torch.linspace(1.0, 1e-5, N, dtype=torch.float64).float()), ref)
    off_grid = torch.rand(256, generator=_gen(N))
    assert torch.equal(sde.timestep_index(off_grid), (off_grid * (N - 1)).long())  # diffusers' expression
    # diffusers' float32 discrete sigmas are ours rounded (<= ~4e-7 relative: log-space float32 linspace)
    assert ((s.discrete_sigmas.double() - sde.discrete_sigmas) / sde.discrete_sigmas).abs().max() < 1e-6


def _ve_times(s, N):
    """(seed, t, sigma(t)): diffusers' timesteps[i] at i = 0 (t = 1), 1, N/2, N-2 (index 1) and
    N-1 (t = 1e-5, index 0: adjacent sigma = 0), plus two t off the grid, where t * (N - 1)
    is not just above an integer. t: float32 0-dim, as diffusers holds its timesteps."""
    cases = [(i, s.timesteps[i]) for i in (0, 1, N // 2, N - 2, N - 1)]
    cases += [(N + k, torch.tensor(v, dtype=torch.float32)) for k, v in enumerate((0.3337, 0.90009))]
    return [(seed, t, 0.01 * (50.0 / 0.01) ** t.item()) for seed, t in cases]


@pytest.mark.parametrize("N", [100, 1000])
def test_ve_reverse_diffusion_step_float64(N):
    """step_pred vs reverse_diffusion_step at the t of _ve_times. Same t for both: the float32
    value expanded to [B] for ours. Tolerance 1e-12 relative to max|x| (x ~ sigma, up to ~170)."""
    s, sde = _ve(N, f64=True)
    B = SHAPE[0]
    for i, t, sigma in _ve_times(s, N):
        x, score = _ve_inputs(sigma, seed=i, dtype=torch.float64)
        ref = s.step_pred(score, t, x, generator=_gen(500 + i))
        noise = torch.randn(SHAPE, generator=_gen(500 + i), dtype=torch.float64)
        x_new, x_mean = reverse_diffusion_step(sde, x, t.expand(B), score, noise)
        scale = max(1.0, ref.prev_sample.abs().max().item())
        _assert_close(x_new, ref.prev_sample, TIGHT * scale, f"N={N} i={i} prev_sample")
        _assert_close(x_mean, ref.prev_sample_mean, TIGHT * scale, f"N={N} i={i} prev_sample_mean")


@pytest.mark.parametrize("N", [100, 1000])
def test_ve_reverse_diffusion_step_float32_stock_diffusers(N):
    """Stock diffusers (float32 sigmas ~4e-7 relative off ours). Tolerance 1e-5 relative to
    max|x| (measured <= 7e-7)."""
    s, sde = _ve(N)
    B = SHAPE[0]
    for i, t, sigma in _ve_times(s, N):
        x, score = _ve_inputs(sigma, seed=i, dtype=torch.float32)
        ref = s.step_pred(score, t, x, generator=_gen(500 + i))
        noise = torch.randn(SHAPE, generator=_gen(500 + i))
        x_new, x_mean = reverse_diffusion_step(sde, x, t.expand(B), score, noise)
        scale = max(1.0, ref.prev_sample.abs().max().item())
        _assert_close(x_new, ref.prev_sample, 1e-5 * scale, f"N={N} i={i} prev_sample")
        _assert_close(x_mean, ref.prev_sample_mean, 1e-5 * scale, f"N={N} i={i} prev_sample_mean")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ve_langevin_corrector_step(dtype):
    """step_correct vs langevin_corrector_step(norm="batch"): step = 2 (snr mean|z| / mean|score|)^2.
    diffusers draws the corrector noise as float32 (randn without dtype) and rounds the step size
    to float32 (`step_size * torch.ones(B)`), so its float64 result carries one float32 rounding
    (<= 6e-8 relative) of the step: tolerance 5e-7 relative to max|x| for float64 (measured
    2e-8), 1e-5 for float32 (measured 0). prev_sample_mean
    is not returned by step_correct; it is checked through prev_sample = mean + sqrt(2 step) z."""
    s, sde = _ve(1000)
    B = SHAPE[0]
    for i, t, sigma in _ve_times(s, 1000):
        x, score = _ve_inputs(sigma, seed=i, dtype=dtype)
        ref = s.step_correct(score, x, generator=_gen(900 + i)).prev_sample
        noise = torch.randn(SHAPE, generator=_gen(900 + i)).to(dtype)
        x_new, _ = langevin_corrector_step(sde, x, t.to(dtype).expand(B), score, noise, SNR, norm="batch")
        scale = max(1.0, ref.abs().max().item())
        _assert_close(x_new, ref, (5e-7 if dtype == torch.float64 else 1e-5) * scale, f"i={i} {dtype}")


def test_ve_pc_loop_matches_diffusers(gm4):
    """The ScoreSdeVe pipeline's loop (one corrector step, then the predictor; one generator for
    both) with the mixture's exact score, against the same loop on our step functions with the
    same noise, N = 100, float64 sigmas. Compares the final x and x_mean. Tolerance 1e-6 relative
    to max|x| (the corrector's float32 step size, see above, over 100 steps)."""
    N = 100
    s, sde = _ve(N, f64=True)
    model = gm4.model(sde)
    x_T = 50.0 * _x_T(torch.float64)
    g = _gen(31)
    x = x_T
    for t in s.timesteps:
        tt = t.double().expand(B_LOOP)
        x = s.step_correct(model(x, tt), x, generator=g).prev_sample
        out = s.step_pred(model(x, tt), t, x, generator=g)
        x, ref_mean = out.prev_sample, out.prev_sample_mean
    ref = x

    g2 = _gen(31)
    x = x_T
    for t in s.timesteps:
        tt = t.double().expand(B_LOOP)
        z = torch.randn((B_LOOP, D), generator=g2).double()       # step_correct: float32 randn
        x, _ = langevin_corrector_step(sde, x, t.expand(B_LOOP), model(x, tt), z, SNR, norm="batch")
        z = torch.randn((B_LOOP, D), generator=g2, dtype=torch.float64)  # step_pred: sample's dtype
        x, x_mean = reverse_diffusion_step(sde, x, t.expand(B_LOOP), model(x, tt), z)
    scale = max(1.0, ref.abs().max().item())
    _assert_close(x, ref, 1e-6 * scale, "pc loop x")
    _assert_close(x_mean, ref_mean, 1e-6 * scale, "pc loop x_mean")
