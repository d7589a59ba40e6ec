"""The engine's face on the command line: sample's engine flags, --check-finite, bench, info."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from diffcore.checkpoint import load_tensors, save_tensors
from diffcore.models.spec import DEFAULT_MODEL


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "diffcore", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_sample_with_engine_flags_writes_all_three_files(tmp_path):
    out = tmp_path / "o"
    r = _run("sample", "--n", "5", "--steps", "3", "--precision", "bf16", "--backend", "torch", "--max-batch", "2",
             "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    u8 = np.load(out / "samples.npz")["arr_0"]
    assert u8.shape == (5, 8, 8, 1) and u8.dtype == np.uint8
    run = json.loads((out / "run.json").read_text())
    assert run["precision"] == "bf16" and run["backend"] == "torch" and run["n"] == 5 and run["samples_per_s"] > 0
    assert (out / "samples.png").stat().st_size > 100
    assert "sample ddim" not in r.stderr  # --quiet: no progress line


def test_check_finite_stops_at_the_first_nan_and_names_step_and_sample(tmp_path):
    bad = tmp_path / "nan-model"
    shutil.copytree(DEFAULT_MODEL, bad)
    weights = load_tensors(os.path.join(bad, "model.safetensors"))
    name = next(k for k in weights if k.endswith("bias") and "out" in k)  # the output layer's bias
    weights[name] = weights[name].clone().fill_(float("nan"))
    save_tensors(os.path.join(bad, "model.safetensors"), weights)
    out = tmp_path / "o"
    r = _run("sample", "--model", str(bad), "--n", "3", "--steps", "4", "--check-finite", "--quiet", "--out", str(out))
    assert r.returncode == 1, r.stderr
    assert "non-finite value" in r.stderr and "sample 0 after step 0" in r.stderr
    assert not (out / "samples.npz").exists()  # nothing written for a failed run


@pytest.mark.parametrize("cmd", ["sample", "train", "eval", "likelihood", "bench", "info"])
def test_every_subcommand_explains_every_flag(cmd, capsys):
    from diffcore.cli import build_parser
    parser = build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args([cmd, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "usage: diffcore " + cmd in text
    sub = next(a for a in parser._actions if a.dest == "command").choices[cmd]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{cmd} {action.option_strings} has no help text"
    if cmd == "sample":
        for flag in ("--model", "--method", "--steps", "--n", "--batch-size", "--precision", "--seed", "--out",
                     "--backend", "--check-finite"):
            assert flag in text


def test_bench_lists_the_benchmarks_and_info_names_the_device():
    r = _run("bench")
    assert r.returncode == 0 and "sampling" in r.stdout and "sde" in r.stdout
    info = json.loads(_run("info").stdout)
    assert info["device"] and info["threads"] >= 1 and "native" in info["backends"]
