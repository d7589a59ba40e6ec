"""Shared benchmark plumbing: timing (medians after warm-up), machine description, JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import torch


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU: {cpu}, {torch.get_num_threads()} threads"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _summary(times: list) -> dict:
    """Median and 20/80% quantiles of wall times in seconds."""
    times = sorted(times)
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))]  # noqa: E731
    return {"median_s": statistics.median(times), "q20_s": q(0.2), "q80_s": q(0.8)}


def _timed(fn) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def timeit(fn, repeats: int = 5, warmup: int = 1) -> dict:
    """Median and 20/80% quantiles of wall time in seconds."""
    for _ in range(warmup):
        fn()
    return _summary([_timed(fn) for _ in range(repeats)])


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """name -> {median_s, q20_s, q80_s}: every round runs each contender once, so drifts in
    machine load fall on all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_timed(fn))
    return {k: _summary(ts) for k, ts in times.items()}


def write_results(name: str, rows: list, ratios: dict) -> str:
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    payload = {"machine": machine(), "torch": torch.__version__, "rows": rows, "ratios": ratios}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)
    return path


def print_table(rows: list) -> None:
    if not rows:
        return
    cols = list(rows[0])
    widths = [max(len(c), *(len(f"{r[c]}") for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(f"{r[c]}".ljust(w) for c, w in zip(cols, widths)))
