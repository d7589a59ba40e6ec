"""Sample i depends only on (seed, i): the same seed gives bitwise-identical samples
whatever the batch size, for every method."""
import pytest
import torch

import diffcore
from diffcore import schedules

N = 64


def _cases():
    ddpm = diffcore.DDPM(schedules.linear_betas(1000))
    ncsn = diffcore.NCSN(schedules.geometric_sigmas(8.0, 0.01, 5))
    return {
        "langevin": (ncsn, "langevin", dict(steps=20, step_size=0.01, init_range=(-8, 8))),
        "annealed_langevin": (ncsn, "annealed_langevin", dict(steps=4, init_range=(-8, 8))),
        "ancestral": (ddpm, "ancestral", dict(steps=20)),
        "ancestral_learned": (diffcore.DDPM(schedules.linear_betas(1000), "learned_range"), "ancestral", dict(steps=20)),
        "ddim_eta1": (ddpm, "ddim", dict(steps=20, eta=1.0)),
        "pc_langevin": (diffcore.VPSDE(), "pc", dict(steps=40, corrector="langevin")),
        "pc_ve_ald": (diffcore.VESDE(), "pc", dict(steps=20, corrector="ald", corrector_steps=2)),
        "pc_subvp_em": (diffcore.SubVPSDE(), "pc", dict(steps=40, predictor="euler_maruyama")),
        "ode_rk45": (diffcore.VPSDE(), "ode", dict(rtol=1e-3, atol=1e-3)),
        "ode_heun": (diffcore.VESDE(), "ode", dict(solver="heun", steps=10)),
    }


@pytest.mark.parametrize("case", sorted(_cases()))
def test_same_seed_same_samples_for_batch_sizes_1_7_64(case, gm2):
    process, method, options = _cases()[case]
    model = gm2.model(process)
    runs = [diffcore.sample(model, process, n=N, shape=(2,), method=method, seed=99, batch_size=b, **options)
            for b in (1, 7, 64)]
    assert torch.isfinite(runs[0]).all()
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    other_seed = diffcore.sample(model, process, n=N, shape=(2,), method=method, seed=100, **options)
    assert not torch.equal(runs[0], other_seed)


def test_image_shaped_samples_are_chunk_invariant():
    gm = diffcore.GaussianMixture(torch.randn(3, 2 * 3 * 5, dtype=torch.float64), 0.4, [0.5, 0.3, 0.2])
    ddpm = diffcore.DDPM(schedules.linear_betas(1000))
    a = diffcore.sample(gm.model(ddpm), ddpm, n=10, shape=(2, 3, 5), method="ancestral", steps=10, seed=1, batch_size=3)
    b = diffcore.sample(gm.model(ddpm), ddpm, n=10, shape=(2, 3, 5), method="ancestral", steps=10, seed=1)
    assert a.shape == (10, 2, 3, 5) and torch.equal(a, b)


@pytest.mark.parametrize("method,process,options", [
    ("pc", diffcore.VESDE(N=20), dict(corrector="none")),
    ("ode", diffcore.VPSDE(), dict(solver="euler", steps=5)),
    ("langevin", diffcore.NCSN([1.0, 0.1]), dict(steps=3)),
    ("annealed_langevin", diffcore.NCSN([1.0, 0.1]), dict(steps=2)),
])
def test_model_sees_float32_time_for_half_precision_state(method, process, options, gm2):
    """Schedule lookups from t collide in fp16/bf16, so times stay float32 at least."""
    seen = set()
    exact = gm2.model(process)

    def model(x, t):
        seen.add(t.dtype)
        return exact(x, t)

    diffcore.sample(model, process, n=3, shape=(2,), method=method, dtype=torch.bfloat16, **options)
    assert seen == {torch.float32}
