"""Resumable sharded jobs: samples 0..n-1 cut into fixed shards, each written once, atomically,
and recorded in a manifest; rank 0 merges them.

    x = run_shards(sample_range, n=50_000, shard_size=256, out_dir="job", settings={...},
                   rank=rank, world=world)   # the samples [n, ...] on rank 0, None elsewhere

- `sample_range(start, count)` returns samples start..start+count-1 as one tensor; how a
  range is sampled is the caller's business. The shard layout depends only on (n, shard_size),
  never on the number of ranks, so every shard is computed with the same batch whatever the
  world size: one process and K ranks give the same bits.
- Shard i belongs to rank i % world. Each rank skips its shards that the manifest lists with a
  matching sha256 (a missing or corrupted one is sampled again, with a warning), writes the
  others, then records them.
- OUT/manifest.json holds the settings, n, shard_size and, per finished shard, its file,
  range and sha256. A manifest whose settings differ from the command's is refused with the
  differing keys named. Manifest updates run under an flock on OUT/.manifest.lock, so ranks
  sharing a file system record their shards without losing each other's.
- Every file (shard, manifest, and the caller's final outputs via `atomic_write`) is written to
  a temporary file in the same directory (".tmp-r<rank>-..."), fsynced and renamed over its
  name; the directory is fsynced too. A crash leaves either the old file or the new one, never
  a torn one; leftover temporary files are removed when the job starts again.
- `discard_job(out_dir)` removes a job (manifest, shards, temporary files) to start over
  (SettingsMismatch is the ValueError for a job with other settings).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import warnings
from contextlib import contextmanager

import torch

from .validation import check_int

FORMAT = "diffcore-shards/1"
MANIFEST = "manifest.json"
LOCK = ".manifest.lock"
SHARD_DIR = "shards"
TMP_PREFIX = ".tmp-r"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, rank: int = 0) -> str:
    """Write `data` to `path` so that a crash leaves the old file or the new one, never a torn
    one: a temporary file in the same directory, fsync, os.replace, fsync of the directory."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{TMP_PREFIX}{rank}-{os.path.basename(path)}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; an output is as readable as any other file
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_temporaries(directory: str, rank: int, world: int) -> list[str]:
    """Remove temporary files a crashed run left in `directory`: this rank's, and on rank 0
    those of ranks >= world (an earlier run with more ranks). Returns the removed paths."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        if not name.startswith(TMP_PREFIX):
            continue
        tag = name[len(TMP_PREFIX):].split("-", 1)[0]
        owner = int(tag) if tag.isdigit() else -1
        if owner == rank or (rank == 0 and (owner < 0 or owner >= world)):
            path = os.path.join(directory, name)
            try:
                os.unlink(path)
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed


def shard_plan(n: int, shard_size: int) -> list[tuple[int, int]]:
    """[(start, count)] of the shards covering 0..n-1; depends on n and shard_size only."""
    n = check_int("n", n, lo=1)
    shard_size = check_int("shard_size", shard_size, lo=1)
    return [(lo, min(shard_size, n - lo)) for lo in range(0, n, shard_size)]


def shard_name(index: int, total: int) -> str:
    width = max(5, len(str(total)))
    return f"shard-{index:0{width}d}-of-{total:0{width}d}.safetensors"


def encode_shard(x: torch.Tensor) -> bytes:
    from safetensors.torch import save

    # one tensor and no metadata: safetensors orders a metadata map at random, and equal samples
    # must give equal bytes (equal checksums) in every run
    return save({"samples": x.detach().contiguous().cpu()})


def decode_shard(data: bytes) -> torch.Tensor:
    from safetensors.torch import load

    return load(data)["samples"]


@contextmanager
def _locked(out_dir: str):
    with open(os.path.join(out_dir, LOCK), "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _jsonable(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _read_manifest(out_dir: str) -> dict | None:
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable manifest ({e}); remove it, or use a new output directory") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("shards"), dict):
        raise ValueError(f"{path} is not a {FORMAT} manifest; remove it, or use a new output directory")
    return m


def _write_manifest(out_dir: str, m: dict, rank: int) -> None:
    atomic_write(os.path.join(out_dir, MANIFEST), (json.dumps(m, indent=2, sort_keys=True) + "\n").encode(), rank)


class SettingsMismatch(ValueError):
    """The manifest in the output directory was written for other settings."""


def discard_job(out_dir: str) -> list[str]:
    """Remove a job's manifest, shards and temporary files (not the caller's final outputs);
    returns the removed paths. For starting over in a directory that holds another job."""
    removed = []
    shard_dir = os.path.join(out_dir, SHARD_DIR)
    for directory, keep in ((shard_dir, lambda n: n.startswith("shard-") or n.startswith(TMP_PREFIX)),
                            (out_dir, lambda n: n == MANIFEST or n.startswith(TMP_PREFIX))):
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            if keep(name):
                os.unlink(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
    return removed


def settings_difference(recorded: dict, wanted: dict) -> list[str]:
    """Lines 'key: recorded -> wanted' for every key whose value differs (or is on one side only)."""
    lines = []
    for key in sorted(set(recorded) | set(wanted)):
        a, b = recorded.get(key, "<absent>"), wanted.get(key, "<absent>")
        if a != b:
            lines.append(f"{key}: {a!r} in the manifest, {b!r} in this command")
    return lines


def open_job(out_dir: str, settings: dict, n: int, shard_size: int, rank: int = 0) -> dict:
    """Create OUT/manifest.json for this job, or check that the one there was written for the
    same settings (ValueError naming the differing ones otherwise). Returns the manifest."""
    wanted = _jsonable({**settings, "n": n, "shard_size": shard_size})
    os.makedirs(os.path.join(out_dir, SHARD_DIR), exist_ok=True)
    with _locked(out_dir):
        m = _read_manifest(out_dir)
        if m is None:
            m = {"format": FORMAT, "settings": wanted, "n": n, "shard_size": shard_size,
                 "num_shards": len(shard_plan(n, shard_size)), "shards": {}}
            _write_manifest(out_dir, m, rank)
            return m
        diff = settings_difference(m.get("settings", {}), wanted)
        if diff:
            raise SettingsMismatch(
                f"{os.path.join(out_dir, MANIFEST)} belongs to a job with different settings, so it cannot be "
                f"resumed by this command:\n  " + "\n  ".join(diff) +
                "\nrun the same command as before to resume it, or choose a new output directory")
        return m


def record_shard(out_dir: str, key: str, entry: dict, rank: int = 0) -> None:
    with _locked(out_dir):
        m = _read_manifest(out_dir)
        m["shards"][key] = entry
        _write_manifest(out_dir, m, rank)


def forget_shard(out_dir: str, key: str, rank: int = 0) -> None:
    with _locked(out_dir):
        m = _read_manifest(out_dir)
        if m["shards"].pop(key, None) is not None:
            _write_manifest(out_dir, m, rank)


def _check_entry(out_dir: str, entry: dict, start: int, count: int, checksum: bool = True) -> str | None:
    """None if the recorded shard is on disk (with its checksum), else what is wrong."""
    path = os.path.join(out_dir, SHARD_DIR, str(entry.get("file")))
    if entry.get("start") != start or entry.get("count") != count:
        return f"it is recorded for samples {entry.get('start')}+{entry.get('count')}, not {start}+{count}"
    if not os.path.isfile(path):
        return f"{path} is missing"
    if checksum and sha256_file(path) != entry.get("sha256"):
        return f"{path} does not match its sha256 in the manifest (corrupted or changed)"
    return None


def run_shards(sample_range, n: int, shard_size: int, out_dir: str, settings: dict, rank: int = 0,
               world: int = 1, comm=None, log=None) -> torch.Tensor | None:
    """Compute this rank's missing shards of samples 0..n-1, then (rank 0) merge all of them.

    comm: None (no process group: ranks run independently, e.g. a simulated split) or an
    object with .barrier() and .all_errors(message | None) -> [messages of every rank]
    (diffcore.distributed.Comm). Returns the merged samples [n, ...] on rank 0, None elsewhere.
    Raises ValueError for a mismatched manifest, and on rank 0 for shards missing at the merge.
    """
    check_int("world", world, lo=1)
    check_int("rank", rank, lo=0, hi=world - 1)
    plan = shard_plan(n, shard_size)
    out_dir = os.path.abspath(out_dir)
    shard_dir = os.path.join(out_dir, SHARD_DIR)
    log = log or (lambda msg: None)

    error = None
    try:
        os.makedirs(out_dir, exist_ok=True)
        remove_temporaries(out_dir, rank, world)
        remove_temporaries(shard_dir, rank, world)
        manifest = open_job(out_dir, settings, n, shard_size, rank)
    except ValueError as e:
        error = e
    if comm is not None:  # every rank fails together rather than waiting at a barrier for one that left
        errors = [e for e in comm.all_errors(None if error is None else (type(error).__name__, str(error))) if e]
        if error is None and errors:
            kind, message = errors[0]
            error = (SettingsMismatch if kind == "SettingsMismatch" else ValueError)(message)
    if error is not None:
        raise error

    total = len(plan)
    mine = [i for i in range(total) if i % world == rank]
    done = 0
    for i in mine:
        start, count = plan[i]
        key, name = str(i), shard_name(i, total)
        entry = manifest["shards"].get(key)
        if entry is not None:
            problem = _check_entry(out_dir, entry, start, count)
            if problem is None:
                done += 1
                continue
            warnings.warn(f"shard {i} (samples {start}..{start + count - 1}): {problem}; sampling it again",
                          stacklevel=2)
            forget_shard(out_dir, key, rank)
        x = sample_range(start, count)
        if not isinstance(x, torch.Tensor) or x.shape[0] != count:
            raise ValueError(f"sample_range({start}, {count}) must return a tensor of {count} samples; "
                             f"got {getattr(x, 'shape', type(x).__name__)}")
        data = encode_shard(x)
        atomic_write(os.path.join(shard_dir, name), data, rank)
        record_shard(out_dir, key, {"file": name, "start": start, "count": count, "sha256": sha256_bytes(data)}, rank)
        log(f"rank {rank}: shard {i + 1}/{total} (samples {start}..{start + count - 1}) written")
    if done:
        log(f"rank {rank}: {done} of its {len(mine)} shards were already done")

    if comm is not None:
        comm.barrier()
    if rank != 0:
        return None
    return merge(out_dir, plan)


def merge(out_dir: str, plan: list[tuple[int, int]]) -> torch.Tensor:
    """All shards of `plan`, checked against their sha256 and concatenated in index order."""
    manifest = _read_manifest(out_dir)
    if manifest is None:
        raise ValueError(f"no manifest in {out_dir}")
    parts, missing = [], []
    for i, (start, count) in enumerate(plan):
        entry = manifest["shards"].get(str(i))
        if entry is None:
            missing.append(i)
            continue
        path = os.path.join(out_dir, SHARD_DIR, str(entry.get("file")))
        problem = _check_entry(out_dir, entry, start, count, checksum=False)  # the bytes are hashed once, below
        if problem is None:
            with open(path, "rb") as f:
                data = f.read()
            if sha256_bytes(data) != entry.get("sha256"):
                problem = f"{path} does not match its sha256 in the manifest (corrupted or changed)"
        if problem is not None:
            forget_shard(out_dir, str(i))
            raise ValueError(f"shard {i}: {problem}; it was dropped from the manifest: run the same command "
                             f"again to sample it again")
        x = decode_shard(data)
        if x.shape[0] != count:
            raise ValueError(f"shard {i} ({path}) holds {x.shape[0]} samples, not {count}")
        parts.append(x)
    if missing:
        raise ValueError(f"shards {missing} of {len(plan)} are not done (did every rank finish?); run the "
                         f"same command again to sample them")
    return torch.cat(parts)
