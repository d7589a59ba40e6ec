"""The engine: any sampler of the reference on the fastest backend, in the precision asked for,
chunked under a memory budget, with each step captured once as a CUDA graph and replayed.

    sampler = diffcore.Sampler(model, process, shape=(3, 32, 32), method="ddim", steps=50,
                               precision="bf16")
    x = sampler.sample(n=50_000, seed=0)

- Steps run as fused ops (diffcore.plans over diffcore.ops) on `backend` ("torch", "native",
  "triton"; None: DIFFCORE_BACKEND, else the fastest present). Methods a plan cannot express
  (rk45's per-sample adaptive steps, controllable generation) run the reference sampler.
- precision: the network runs under autocast in fp32 / bf16 / fp16; the sampler state and the
  schedule arithmetic stay float32 (float64 when dtype=float64). bf16 on a CPU where oneDNN has
  no bf16 kernels: diffcore.precision.autocast (bf16 operands and outputs, float32 arithmetic).
- Sample i's noise depends only on (seed, i, step), so the samples are the same whatever
  max_batch (the chunk size), start offset or backend (to rounding across backends).
- On CUDA (cuda_graph="auto" or True) one whole step — network and update, every predictor and
  corrector sub-step, both Heun stages — is captured once with static buffers and replayed;
  per-step times and coefficients are copied from device tables and the noise is drawn on the
  device into a static buffer, so no step waits for the host. Capture failure: one warning,
  then eager steps.
"""
from __future__ import annotations

import math
import time
import warnings

import torch

from . import plans, winograd
from .discrete import DDPM, NCSN
from .noise import NoiseSource
from .precision import PRECISIONS, AutocastModel
from .progress import Progress
from .sde import SDE
from .validation import check_choice, check_device, check_finite, check_int

DTYPES = (torch.float32, torch.float64)
GRAPH_MODES = ("auto", True, False)
# No portable free-memory query on CPU: chunks of at least 256 samples (enough to keep
# convolutions efficient) and up to 2^20 state elements, so small samples (2-D toys: 524 288
# per chunk) pay the per-step Python cost once per step, not once per 256 samples.
CPU_MIN_CHUNK, CPU_CHUNK_ELEMENTS = 256, 2**20
_warned_capture = False


class NonFiniteError(FloatingPointError):
    """Raised by check_finite runs: the first step whose output holds NaN or Inf, and the
    global index of the first sample affected."""

    def __init__(self, step: int, sample_index: int, method: str):
        self.step, self.sample_index, self.method = step, sample_index, method
        super().__init__(f"non-finite value (NaN or Inf) in sample {sample_index} after step {step} of "
                         f"method={method!r}; check the model's output there (or its precision: try precision='fp32')")


def _check_shape(shape):
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    shape = tuple(shape) if isinstance(shape, (tuple, list, torch.Size)) else shape
    if not isinstance(shape, tuple) or not shape or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints (one sample's shape); got {shape!r}")
    return shape


class Sampler:
    """A configured sampling run; `sample(n, seed)` draws samples. See the module docstring."""

    def __init__(self, model, process, shape, method: str = "ancestral", steps: int | None = None, *,
                 backend: str | None = None, precision: str = "fp32", cuda_graph="auto",
                 max_batch: int | None = None, progress: bool = False, check_finite: bool = False,
                 dtype: torch.dtype = torch.float32, device=None, **options):
        from .sampling import METHODS
        if not callable(model):
            raise ValueError(f"model must be callable as model(x, t); got {type(model).__name__}")
        if not isinstance(process, (NCSN, DDPM, SDE)):
            raise ValueError(f"process must be an NCSN, DDPM, VESDE, VPSDE or SubVPSDE; got {type(process).__name__}")
        check_choice("method", method, METHODS)
        self.shape = _check_shape(shape)
        if steps is not None:
            check_int("steps", steps, lo=1)
        if backend is not None:
            from .ops import BACKENDS
            check_choice("backend", backend, BACKENDS + ("auto",))
        check_choice("precision", precision, PRECISIONS)
        if cuda_graph not in GRAPH_MODES:
            raise ValueError(f"cuda_graph must be one of 'auto', True, False; got {cuda_graph!r}")
        if max_batch is not None:
            check_int("max_batch", max_batch, lo=1)
        if dtype not in DTYPES:
            raise ValueError(f"dtype (the sampler state's) must be one of {[str(d) for d in DTYPES]}; got {dtype}")
        if precision != "fp32" and dtype != torch.float32:
            raise ValueError(f"precision={precision!r} runs the network in low precision with float32 state; "
                             f"dtype must be torch.float32, got {dtype}")
        self.process, self.method, self.steps, self.options = process, method, steps, options
        self.backend = None if backend == "auto" else backend
        self.precision, self.cuda_graph, self.max_batch = precision, cuda_graph, max_batch
        self.progress, self.check_finite, self.dtype = bool(progress), bool(check_finite), dtype
        self.device = check_device("device", device) if device is not None else None
        self.model = model if precision == "fp32" else AutocastModel(model, precision)
        from .samplers.common import check_options
        check_options(method, options, METHODS[method][1])
        run_backend = "torch" if backend == "torch" else self.backend
        self.plan = plans.build(method, self.model, process, self.shape, steps, run_backend, options)
        if self.plan is not None:
            self.plan.time_dtype = torch.float64 if dtype == torch.float64 else torch.float32

    # ---- public -------------------------------------------------------------------------
    def sample(self, n: int, seed: int = 0, start: int = 0, x_init: torch.Tensor | None = None,
               return_info: bool = False):
        """Samples start .. start + n - 1 as a tensor [n, *shape] (and an info dict)."""
        n = check_int("n", n, lo=1)
        check_int("seed", seed, lo=0, hi=2**64 - 1)
        check_int("start", start, lo=0, hi=2**62)
        if x_init is not None:
            check_finite("x_init", x_init)
            if tuple(x_init.shape) != (n, *self.shape):
                raise ValueError(f"x_init must have shape [n, *shape] = {(n, *self.shape)}; got {tuple(x_init.shape)}")
        device = self.device or (x_init.device if x_init is not None else torch.device("cpu"))
        winograd.revalidate()   # Winograd layers check every weight value once per run (see winograd._transformed)
        chunk = self._chunk_size(n, device)
        n_chunks = -(-n // chunk)
        total = n_chunks * (self.plan.n_steps if self.plan is not None else 1)
        bar = Progress(total, desc=f"sample {self.method}", unit="step", enabled=self.progress)
        t0 = time.perf_counter()
        out = torch.empty((n, *self.shape), dtype=self.dtype, device=device)
        graphed = False
        nfe, per_sample = 0, []
        with torch.no_grad():
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk)
                idx = torch.arange(start + lo, start + hi, device=device)
                noise = NoiseSource(seed, idx, self.shape, dtype=self.dtype)
                x0 = None if x_init is None else x_init[lo:hi].to(device=device, dtype=self.dtype)
                if self.plan is None:
                    x, info = self._reference(noise, x0, start + lo, bar)
                    nfe = info["nfe"]
                    if "nfe_per_sample" in info:
                        per_sample.append(info["nfe_per_sample"])
                else:
                    x, graphed = self._run_plan(noise, x0, start + lo, bar, lo, hi, t0)
                    nfe = self.plan.n_steps * self.plan.nfe_per_step + self.plan.final_nfe
                out[lo:hi] = x
        bar.close()
        if not return_info:
            return out
        elapsed = time.perf_counter() - t0
        info = {"nfe": nfe, "path": "reference" if self.plan is None else "fused", "cuda_graph": graphed,
                "max_batch": chunk, "chunks": n_chunks, "seconds": elapsed, "samples_per_s": n / elapsed}
        if per_sample:
            info["nfe_per_sample"] = torch.cat(per_sample)
        return out, info

    __call__ = sample

    # ---- pieces -------------------------------------------------------------------------
    def _chunk_size(self, n, device):
        if self.max_batch is not None:
            return min(n, self.max_batch)
        if self.plan is None:
            return n  # the reference samplers take the whole batch, as reference_sample does
        if device.type == "cuda":
            return min(n, self._cuda_budget(n, device))
        return min(n, max(CPU_MIN_CHUNK, CPU_CHUNK_ELEMENTS // math.prod(self.shape)))

    def _cuda_budget(self, n, device):
        """Samples per chunk that fit in 80% of free memory, from one probe step at a small batch."""
        b0 = min(n, 8)
        free, _ = torch.cuda.mem_get_info(device)
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.no_grad():
            x = torch.zeros((b0, *self.shape), dtype=self.dtype, device=device)
            t = self.plan.inputs(0, b0, device)["t"] if self.plan is not None else torch.zeros(b0, device=device)
            self.model(x, t)
        per_sample = max(1, (torch.cuda.max_memory_allocated(device) - base) // b0)
        return max(1, int(0.8 * free / (per_sample * 1.5)))  # 1.5: state, noise and graph buffers

    def _reference(self, noise, x0, first, bar):
        from .sampling import METHODS
        run, _ = METHODS[self.method]
        x, info = run(self.model, self.process, noise, self.steps, x0, **self.options)
        bar.update(1)
        if self.check_finite:
            self._check(x, -1, first)
        return x, info

    def _check(self, x, k, first):
        bad = ~torch.isfinite(x.flatten(1)).all(1)
        if bad.any():
            raise NonFiniteError(k, first + int(bad.nonzero()[0, 0]), self.method)

    def _run_plan(self, noise, x0, first, bar, lo, hi, t0):
        plan = self.plan
        device = noise.sample_idx.device
        B = hi - lo
        x = plan.init(noise, x0).to(self.dtype)
        table = [plan.inputs(k, B, device) for k in range(plan.n_steps)]
        graph = None
        if device.type == "cuda" and self.cuda_graph in ("auto", True) and not self.check_finite:
            graph = _capture(plan, x, table[0], len(plan.draws(0)), noise)
        x_mean = x
        for k in range(plan.n_steps):
            if graph is not None:
                x, x_mean = graph.replay(x, table[k], plan.draws(k), noise)
            else:
                noises = [{"seed": noise.seed, "sample_idx": noise.sample_idx, "step": s, "stream": st}
                          for s, st in plan.draws(k)]
                x, x_mean = plan.step(x, table[k], noises)
            if self.check_finite:
                self._check(x, k, first)
            bar.update(1, samples_done=lo if k < plan.n_steps - 1 else hi,
                       samples_per_s=round(lo / max(time.perf_counter() - t0, 1e-9), 2))
        x = plan.finish(x, x_mean)
        return x, graph is not None


class _Graph:
    """One captured step with static buffers: x, the step inputs and one noise buffer per draw."""

    def __init__(self, plan, x, inp, n_draws):
        self.x = x.clone()
        self.inp = {k: v.clone() for k, v in inp.items()}
        self.z = [torch.zeros_like(x) for _ in range(n_draws)]
        noises = [{"noise": z} for z in self.z]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside capture (lazy inits, autotuning)
            for _ in range(2):
                plan.step(self.x.clone(), self.inp, noises)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out, self.out_mean = plan.step(self.x, self.inp, noises)

    def replay(self, x, inp, draws, noise):
        if x.data_ptr() != self.x.data_ptr():
            self.x.copy_(x)
        for k, v in inp.items():
            self.inp[k].copy_(v)
        for z, (s, st) in zip(self.z, draws):
            z.copy_(noise.normal(s, st))
        self.graph.replay()
        self.x.copy_(self.out)
        return self.x, self.out_mean


def _capture(plan, x, inp, n_draws, noise):
    global _warned_capture
    if getattr(plan, "_capture_failed", False):   # one try per plan: every chunk would fail alike
        return None
    stream = torch.cuda.current_stream()
    try:
        return _Graph(plan, x, inp, n_draws)
    except Exception as e:  # an uncapturable model (host syncs, CPU ops): run eagerly
        torch.cuda.set_stream(stream)   # a capture that fails in capture_end leaves its stream current
        plan._capture_failed = True
        why = f"{type(e).__name__}: {e}"
        if e.__context__ is not None:   # capture_end's error hides the op that broke the capture
            why = f"{type(e.__context__).__name__}: {e.__context__}; then {why}"
        if not _warned_capture:
            _warned_capture = True
            warnings.warn(f"diffcore: CUDA-graph capture failed ({why}); sampling eagerly",
                          RuntimeWarning, stacklevel=4)
        return None
