"""Resumable sampling jobs: a `diffcore sample` killed with SIGKILL part-way and started again
with the same command ends with the bits of an uninterrupted run; a different command is
refused; a corrupted shard is found by its checksum and drawn again."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from diffcore import shards

# 10 shards of 4 digits with 20 DDIM steps: a few seconds, so the kill lands between shards
JOB = ["sample", "--num-samples", "40", "--steps", "20", "--shard-size", "4", "--seed", "2", "--quiet"]
NUM_SHARDS = 10


def _cmd(out, *extra):
    return [sys.executable, "-m", "diffcore", *JOB, *extra, "--out", str(out)]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    return env


def _run(out, *extra):
    return subprocess.run(_cmd(out, *extra), capture_output=True, text=True, env=_env(), timeout=300)


def _done(out):
    try:
        return len(json.loads((out / "manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def _assert_complete_and_clean(out):
    m = shards._read_manifest(str(out))
    assert sorted(m["shards"], key=int) == [str(i) for i in range(NUM_SHARDS)]
    assert [(e["start"], e["count"]) for _, e in sorted(m["shards"].items(), key=lambda kv: int(kv[0]))] == \
        shards.shard_plan(40, 4)
    files = sorted(os.listdir(out / "shards"))
    assert files == sorted(e["file"] for e in m["shards"].values())  # one file per shard, no extra
    for e in m["shards"].values():
        assert shards.sha256_file(str(out / "shards" / e["file"])) == e["sha256"]
    leftovers = [n for d in (out, out / "shards") for n in os.listdir(d) if n.startswith(".tmp")]
    assert leftovers == []


def _assert_same_samples(a, b):
    assert [p.read_bytes() for p in sorted((a / "shards").iterdir())] == \
        [p.read_bytes() for p in sorted((b / "shards").iterdir())]
    x, y = np.load(a / "samples.npz")["arr_0"], np.load(b / "samples.npz")["arr_0"]
    assert x.shape == (40, 8, 8, 1) and np.array_equal(x, y)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "uninterrupted"
    r = _run(out)
    assert r.returncode == 0, r.stderr
    _assert_complete_and_clean(out)
    return out


def test_sigkill_part_way_then_same_command_gives_the_uninterrupted_samples(tmp_path, uninterrupted):
    out = tmp_path / "job"
    p = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        deadline = time.monotonic() + 240
        while p.poll() is None and _done(out) < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        killed_at = _done(out)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL, "the job ended before it could be killed part-way"
    done = _done(out)
    assert 1 <= killed_at <= done < NUM_SHARDS
    assert not (out / "samples.npz").exists()

    r = _run(out)
    assert r.returncode == 0, r.stderr
    assert f"rank 0: {done} of its {NUM_SHARDS} shards were already done" in r.stderr
    assert r.stderr.count(" written") == NUM_SHARDS - done  # only the missing shards were drawn
    _assert_complete_and_clean(out)
    _assert_same_samples(out, uninterrupted)


def test_a_command_with_other_settings_is_refused_naming_them(tmp_path, uninterrupted):
    out = tmp_path / "job"
    shutil.copytree(uninterrupted, out)
    before = (out / "manifest.json").read_bytes()
    r = _run(out, "--seed", "3", "--precision", "bf16")  # later flags win over JOB's --seed 2
    assert r.returncode == 2
    assert "different settings" in r.stderr
    assert "seed: 2 in the manifest, 3 in this command" in r.stderr
    assert "precision: 'fp32' in the manifest, 'bf16' in this command" in r.stderr
    assert "steps" not in r.stderr.split("different settings")[1]  # only what differs is named
    assert "or pass --restart to discard the earlier job" in r.stderr
    assert (out / "manifest.json").read_bytes() == before
    _assert_same_samples(out, uninterrupted)
    # --restart discards the earlier job and draws every shard of the new one
    r = _run(out, "--seed", "3", "--restart")
    assert r.returncode == 0, r.stderr
    assert "removed the earlier job's manifest and 10 shards" in r.stderr
    assert r.stderr.count(" written") == NUM_SHARDS
    assert shards._read_manifest(str(out))["settings"]["seed"] == 3
    _assert_complete_and_clean(out)
    assert not np.array_equal(np.load(out / "samples.npz")["arr_0"], np.load(uninterrupted / "samples.npz")["arr_0"])


def test_a_corrupted_shard_is_found_by_its_checksum_and_drawn_again(tmp_path, uninterrupted):
    out = tmp_path / "job"
    shutil.copytree(uninterrupted, out)
    victim = sorted((out / "shards").iterdir())[3]
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0x01  # one flipped bit in the samples
    victim.write_bytes(bytes(data))
    (out / "shards" / ".tmp-r0-shard-00004-of-00010.safetensors-abc").write_bytes(b"torn")  # a crash's leftover
    r = _run(out)
    assert r.returncode == 0, r.stderr
    assert "shard 3 (samples 12..15)" in r.stderr and "does not match its sha256" in r.stderr
    assert r.stderr.count(" written") == 1
    _assert_complete_and_clean(out)
    _assert_same_samples(out, uninterrupted)


# --- the runner itself, with a range function that needs no model ---

def _arange(calls):
    def sample_range(start, count):
        calls.append(start)
        return torch.arange(start, start + count, dtype=torch.float32)[:, None].repeat(1, 2)
    return sample_range


def test_runner_resumes_after_a_crash_without_drawing_a_shard_twice(tmp_path):
    calls = []
    crash = _arange(calls)

    def crashing(start, count):
        if start == 6:
            raise RuntimeError("power cut")
        return crash(start, count)

    with pytest.raises(RuntimeError, match="power cut"):
        shards.run_shards(crashing, 11, 3, str(tmp_path), {"seed": 0})
    assert calls == [0, 3]
    # a shard file renamed into place but not yet recorded (the crash came between) is drawn again
    (tmp_path / "shards" / shards.shard_name(2, 4)).write_bytes(b"half a job")
    x = shards.run_shards(_arange(calls), 11, 3, str(tmp_path), {"seed": 0})
    assert calls == [0, 3, 6, 9]
    assert torch.equal(x[:, 0], torch.arange(11, dtype=torch.float32))
    again = shards.run_shards(_arange(calls), 11, 3, str(tmp_path), {"seed": 0})  # finished: only merges
    assert calls == [0, 3, 6, 9] and torch.equal(again, x)


def test_runner_refuses_other_settings_and_other_shard_layouts(tmp_path):
    shards.run_shards(_arange([]), 6, 3, str(tmp_path), {"seed": 0, "method": "ddim"})
    with pytest.raises(ValueError, match=r"(?s)different settings.*method: 'ddim' in the manifest, 'pc' in this command"):
        shards.run_shards(_arange([]), 6, 3, str(tmp_path), {"seed": 0, "method": "pc"})
    with pytest.raises(ValueError, match=r"(?s)n: 6 in the manifest, 7 in this command.*shard_size: 3 in the manifest, 2"):
        shards.run_shards(_arange([]), 7, 2, str(tmp_path), {"seed": 0, "method": "ddim"})


def test_discard_job_removes_the_job_but_not_other_files(tmp_path):
    shards.run_shards(_arange([]), 6, 2, str(tmp_path), {})
    (tmp_path / "samples.npz").write_bytes(b"final output")
    (tmp_path / "shards" / ".tmp-r0-shard-x").write_bytes(b"torn")
    removed = shards.discard_job(str(tmp_path))
    assert len(removed) == 5  # the manifest, three shards and the temporary file
    assert sorted(os.listdir(tmp_path)) == [".manifest.lock", "samples.npz", "shards"]
    assert os.listdir(tmp_path / "shards") == []
    calls = []
    shards.run_shards(_arange(calls), 6, 3, str(tmp_path), {"other": True})  # a new job opens there
    assert calls == [0, 3]


def test_runner_redraws_a_corrupted_or_missing_shard_with_a_warning(tmp_path):
    calls = []
    shards.run_shards(_arange(calls), 6, 2, str(tmp_path), {})
    (tmp_path / "shards" / shards.shard_name(1, 3)).write_bytes(b"garbage")
    os.unlink(tmp_path / "shards" / shards.shard_name(2, 3))
    with pytest.warns(UserWarning) as record:
        x = shards.run_shards(_arange(calls), 6, 2, str(tmp_path), {})
    messages = [str(w.message) for w in record]
    assert any("shard 1 (samples 2..3)" in m and "does not match its sha256" in m for m in messages)
    assert any("shard 2 (samples 4..5)" in m and "is missing" in m for m in messages)
    assert calls == [0, 2, 4, 2, 4]
    assert torch.equal(x[:, 0], torch.arange(6, dtype=torch.float32))


def test_merge_refuses_a_shard_corrupted_after_it_was_checked(tmp_path):
    shards.run_shards(_arange([]), 4, 2, str(tmp_path), {})
    (tmp_path / "shards" / shards.shard_name(0, 2)).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="shard 0: .* does not match its sha256.*run the same command again"):
        shards.merge(str(tmp_path), shards.shard_plan(4, 2))
    assert "0" not in shards._read_manifest(str(tmp_path))["shards"]  # the next run draws it again


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "out.bin"
    shards.atomic_write(str(path), b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        shards.atomic_write(str(path), b"new")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_a_manifest_that_is_not_one_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text("{ not json")
    with pytest.raises(ValueError, match="manifest.json is not a readable manifest"):
        shards.run_shards(_arange([]), 4, 2, str(tmp_path), {})
