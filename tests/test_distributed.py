"""Distributed sampling: samples split by index over ranks, merged by rank 0, bitwise equal to
one process (two gloo processes under torchrun; and the Python API over a simulated split)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import diffcore
from diffcore import distributed, shards
from diffcore.sde import VPSDE

TORCHRUN = Path(sys.executable).with_name("torchrun")
# tiny job on the embedded digits model: 3 shards of 4 (rank 0 draws shards 0 and 2, rank 1 shard 1)
JOB = ["sample", "--num-samples", "12", "--steps", "3", "--shard-size", "4", "--seed", "5", "--quiet"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _shard_bytes(out):
    return [p.read_bytes() for p in sorted((out / "shards").iterdir())]


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this python")
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_gloo_ranks_under_torchrun_equal_one_process_bitwise(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run([sys.executable, "-m", "diffcore", *JOB, "--out", str(one)], capture_output=True, text=True,
                        env=_env(), timeout=300)
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "diffcore", *JOB,
                         "--out", str(two)], capture_output=True, text=True, env=_env(), timeout=300)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    # both ranks drew their own shards: rank 1 wrote shard 1, rank 0 shards 0 and 2
    assert "rank 1: shard 2/3" in r2.stderr and "rank 0: shard 1/3" in r2.stderr and "rank 0: shard 3/3" in r2.stderr
    assert "rank 1: shard 1/3" not in r2.stderr
    # the float samples of every shard, byte for byte, and the merged uint8 array
    assert _shard_bytes(one) == _shard_bytes(two)
    a, b = np.load(one / "samples.npz")["arr_0"], np.load(two / "samples.npz")["arr_0"]
    assert a.shape == (12, 8, 8, 1) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert (one / "samples.png").read_bytes() == (two / "samples.png").read_bytes()
    m1, m2 = (shards._read_manifest(str(d)) for d in (one, two))
    assert m1["shards"] == m2["shards"] and len(m2["shards"]) == 3


API_SCRIPT = """
import sys
import torch
import diffcore
from diffcore import distributed, shards
from diffcore.sde import VPSDE

out = sys.argv[1]
ctx = distributed.init_from_env("cpu")
assert ctx.world == 2 and ctx.comm is not None
gm = diffcore.GaussianMixture([[4.0, 0.0], [-4.0, 0.0]], 0.5, [0.8, 0.2])
process = VPSDE()
kw = dict(n=22, shape=(2,), method="pc", steps=12, seed=3, predictor="euler_maruyama", corrector="none")
x = distributed.sample_sharded(gm.model(process), process, out_dir=out + "/job", shard_size=5, **kw)
assert (x is None) == (ctx.rank != 0)
if ctx.rank == 0:
    assert torch.equal(x, diffcore.sample(gm.model(process), process, **kw))
# the same directory with another seed: every rank refuses (none is left waiting at a barrier)
try:
    distributed.sample_sharded(gm.model(process), process, out_dir=out + "/job", shard_size=5, **{**kw, "seed": 4})
except shards.SettingsMismatch as e:
    assert "seed: 3 in the manifest, 4 in this command" in str(e)
    print(f"rank {ctx.rank} refused", flush=True)
distributed.finish(ctx)
"""


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this python")
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_python_api_under_a_gloo_process_group(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(API_SCRIPT)
    r = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(script), str(tmp_path)],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rank 0 refused" in r.stdout and "rank 1 refused" in r.stdout
    m = shards._read_manifest(str(tmp_path / "job"))
    assert sorted(m["shards"], key=int) == ["0", "1", "2", "3", "4"]


# --- the Python API over a simulated split (ranks run one after the other, no process group) ---

@pytest.fixture
def vp_gmm(gm2):
    process = VPSDE()
    return gm2.model(process), process


KW = dict(n=22, shape=(2,), method="pc", steps=12, seed=3, predictor="euler_maruyama", corrector="none")


def test_shard_plan_covers_every_index_once_whatever_the_world():
    plan = shards.shard_plan(22, 5)
    assert plan == [(0, 5), (5, 5), (10, 5), (15, 5), (20, 2)]
    for world in (1, 2, 3, 7):
        owned = sorted(i for r in range(world) for i in range(len(plan)) if i % world == r)
        assert owned == list(range(len(plan)))


@pytest.mark.parametrize("world", [2, 3])
def test_simulated_split_equals_one_process_bitwise(tmp_path, vp_gmm, world):
    model, process = vp_gmm
    ref = distributed.sample_sharded(model, process, out_dir=str(tmp_path / "one"), shard_size=5, **KW)
    out = str(tmp_path / f"w{world}")
    for rank in reversed(range(world)):  # rank 0 last: it merges
        x = distributed.sample_sharded(model, process, out_dir=out, shard_size=5, rank=rank, world=world, **KW)
        assert (x is None) == (rank != 0)
    assert torch.equal(x, ref)
    # the closed-form model treats each sample alone, so the shards are even the bits of one big call
    assert torch.equal(x, diffcore.sample(model, process, **KW))
    m = shards._read_manifest(out)
    assert sorted(m["shards"], key=int) == [str(i) for i in range(5)]


def test_rank_0_refuses_to_merge_when_another_rank_has_not_finished(tmp_path, vp_gmm):
    model, process = vp_gmm
    with pytest.raises(ValueError, match=r"shards \[1, 3\] of 5 are not done"):
        distributed.sample_sharded(model, process, out_dir=str(tmp_path), shard_size=5, rank=0, world=2, **KW)
    # rank 1 catches up; rank 0 run again merges without drawing its shards again
    distributed.sample_sharded(model, process, out_dir=str(tmp_path), shard_size=5, rank=1, world=2, **KW)
    calls = []
    x = shards.run_shards(lambda s, c: calls.append(s), 22, 5, str(tmp_path),
                          shards._read_manifest(str(tmp_path))["settings"], rank=0, world=2)
    assert calls == [] and x.shape == (22, 2)


def test_run_shards_splits_a_generic_range_function(tmp_path):
    """The runner knows nothing of samplers: any sample_range(start, count) -> tensor."""
    drawn = {}

    def sample_range(start, count):
        drawn.setdefault(start, 0)
        drawn[start] += 1
        return torch.arange(start, start + count, dtype=torch.float64)[:, None] * torch.ones(1, 3)

    for rank in (2, 1, 0):
        x = shards.run_shards(sample_range, 10, 3, str(tmp_path), {"what": "arange"}, rank=rank, world=3)
    assert torch.equal(x[:, 0], torch.arange(10, dtype=torch.float64))
    assert drawn == {0: 1, 3: 1, 6: 1, 9: 1}


def test_env_world_reads_torchrun_variables(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.env_world() == (0, 1, 0)
    ctx = distributed.init_from_env("cpu")
    assert (ctx.rank, ctx.world, ctx.comm) == (0, 1, None)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.env_world() == (3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4 and WORLD_SIZE=4"):
        distributed.env_world()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK must be an integer"):
        distributed.env_world()
