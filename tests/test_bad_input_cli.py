"""Bad input to the `diffcore` command and to model and checkpoint files.

- CLI_CASES: argv -> exit status 2 and one line on stderr that names the flag or the file,
  never a traceback (every subcommand: sample, train, eval, likelihood, info).
- FILE_CASES: model and checkpoint loading (diffcore.checkpoint, models.spec.load_model,
  Trainer.resume) on pickle, corrupt, truncated, mismatched and missing files: the error
  type and a message that names the file and the problem.
- Writes are atomic: a write that fails part-way leaves neither a torn file nor a temporary.

The CLI runs in-process (diffcore.cli.main): every case fails before any sampling or training.
"""
import json
import os
import re
import shutil

import pytest
import torch

from diffcore import checkpoint, data, train
from diffcore.cli import main
from diffcore.models.spec import DEFAULT_MODEL, load_model

PICKLE_WHY = r"looks like a pickle checkpoint .*safetensors only, because unpickling can run arbitrary code.*st.save_file"
CORRUPT = r"is not a readable safetensors file \(corrupt or truncated\?\)"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Paths of good, bad and ugly model files and training outputs."""
    d = tmp_path_factory.mktemp("files")
    spec_text = open(os.path.join(DEFAULT_MODEL, "model.json")).read()
    weights = open(os.path.join(DEFAULT_MODEL, "model.safetensors"), "rb").read()
    p = {"dir": str(d), "file": str(d / "a-file.txt")}
    (d / "a-file.txt").write_text("not a directory")
    torch.save({"w": torch.ones(2)}, d / "model.pt")
    p["pt"] = str(d / "model.pt")

    def model_dir(name, json_text=spec_text, st_bytes=weights):
        m = d / name
        m.mkdir()
        if json_text is not None:
            (m / "model.json").write_text(json_text)
        if st_bytes is not None:
            (m / "model.safetensors").write_bytes(st_bytes)
        p[name] = str(m)

    model_dir("good")
    model_dir("corrupt", st_bytes=b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    model_dir("truncated", st_bytes=weights[: len(weights) // 2])
    model_dir("pickled", st_bytes=open(p["pt"], "rb").read())     # torch.save output renamed .safetensors
    model_dir("empty_weights", st_bytes=b"")
    spec = json.loads(spec_text)
    spec["network"]["config"]["ch"] = 16                             # weights are for ch = 32
    model_dir("mismatched", json_text=json.dumps(spec))
    model_dir("bad_json", json_text=spec_text[: len(spec_text) // 2])
    model_dir("no_json", json_text=None)
    model_dir("no_weights", st_bytes=None)
    model_dir("json_list", json_text="[1, 2]")
    model_dir("classifier", json_text=open(os.path.join(DEFAULT_MODEL, "..", "digits-classifier", "model.json")).read())
    spec2 = json.loads(spec_text)
    spec2["network"]["type"] = "transformer"
    model_dir("bad_network", json_text=json.dumps(spec2))
    # a bare .safetensors file whose .json sidecar is missing
    (d / "lonely.safetensors").write_bytes(weights)
    p["lonely"] = str(d / "lonely.safetensors")

    # data sets: CIFAR-10 batches that are garbage or a pickle of a function; a folder with an object .npy
    import pickle

    import numpy as np
    for name, blob in (("cifar_garbage", b"\x80\x04garbage"), ("cifar_evil", pickle.dumps(os.getcwd))):
        (d / name).mkdir()
        for i in range(1, 6):
            (d / name / f"data_batch_{i}").write_bytes(blob)
        p[name] = str(d / name)
    (d / "npy_objects").mkdir()
    np.save(d / "npy_objects" / "a.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    p["npy_objects"] = str(d / "npy_objects")

    # training outputs: a real one-step checkpoint of a tiny run, then damaged copies
    cfg = train.TrainConfig(family="sde-vp", steps=1, batch_size=8, checkpoint_every=1, network={"hidden": 8, "depth": 1})
    data = torch.randn(16, 2) * 0.5
    real = d / "run"
    train.Trainer(cfg, str(real), data=data, progress=False).run()
    p["run"], p["cfg"], p["data"] = str(real), cfg, data

    def run_copy(name, edit):
        r = d / name
        shutil.copytree(real, r)
        edit(r)
        p[name] = str(r)

    run_copy("ckpt_corrupt", lambda r: (r / "checkpoint.safetensors").write_bytes(b"garbage"))
    run_copy("ckpt_truncated", lambda r: (r / "checkpoint.safetensors").write_bytes(
        (real / "checkpoint.safetensors").read_bytes()[:200]))
    run_copy("ckpt_missing_tensors", lambda r: (r / "checkpoint.safetensors").unlink())
    run_copy("ckpt_bad_json", lambda r: (r / "checkpoint.json").write_text('{"format": "diffcore-checkpoint", "st'))

    def other_step(r):
        meta = json.loads((r / "checkpoint.json").read_text())
        meta["step"] = 7
        (r / "checkpoint.json").write_text(json.dumps(meta))
    run_copy("ckpt_steps_disagree", other_step)

    def not_a_checkpoint(r):
        (r / "checkpoint.json").write_text(json.dumps({"format": "something-else", "step": 1}))
    run_copy("ckpt_foreign", not_a_checkpoint)

    def other_settings(r):
        meta = json.loads((r / "checkpoint.json").read_text())
        meta["config"]["lr"] = 0.5
        (r / "checkpoint.json").write_text(json.dumps(meta))
    run_copy("ckpt_other_settings", other_settings)

    def wrong_shapes(r):
        t = checkpoint.load_tensors(str(r / "checkpoint.safetensors"))
        t = {k: (torch.zeros(3, 3) if k.startswith("model.") and v.dim() == 2 else v) for k, v in t.items()}
        checkpoint.save_tensors(str(r / "checkpoint.safetensors"), t, {"step": 1})
    run_copy("ckpt_wrong_shapes", wrong_shapes)
    return p


def _resume(files, name):
    return train.Trainer(files["cfg"], files[name], data=files["data"], progress=False).resume()


FILE_CASES = {
    # name: (call(files), error type, pattern)
    "load_tensors pickle suffix": (lambda f: checkpoint.load_tensors(f["pt"]), ValueError, PICKLE_WHY),
    "load_tensors pickle renamed .safetensors": (lambda f: checkpoint.load_tensors(os.path.join(f["pickled"], "model.safetensors")),
                                                 ValueError, PICKLE_WHY + r"|pickle or torch.save data inside"),
    "load_tensors corrupt": (lambda f: checkpoint.load_tensors(os.path.join(f["corrupt"], "model.safetensors")), ValueError, CORRUPT),
    "load_tensors truncated": (lambda f: checkpoint.load_tensors(os.path.join(f["truncated"], "model.safetensors")), ValueError, CORRUPT),
    "load_tensors empty": (lambda f: checkpoint.load_tensors(os.path.join(f["empty_weights"], "model.safetensors")), ValueError, CORRUPT),
    "load_tensors missing": (lambda f: checkpoint.load_tensors(os.path.join(f["dir"], "none.safetensors")), FileNotFoundError,
                             r"weights file '.*none.safetensors' does not exist"),
    "read_metadata corrupt": (lambda f: checkpoint.read_metadata(os.path.join(f["corrupt"], "model.safetensors")), ValueError, CORRUPT),
    "load_json truncated": (lambda f: checkpoint.load_json(os.path.join(f["bad_json"], "model.json")), ValueError,
                            r"'.*bad_json/model.json' is not valid JSON \(corrupt or truncated\?\)"),
    "load_json list": (lambda f: checkpoint.load_json(os.path.join(f["json_list"], "model.json")), ValueError, r"must hold a JSON object; got list"),
    "load_json missing": (lambda f: checkpoint.load_json(os.path.join(f["dir"], "none.json")), FileNotFoundError,
                          r"config file '.*none.json' does not exist"),
    "load_state mismatched": (lambda f: checkpoint.load_state(torch.nn.Linear(2, 2), {"weight": torch.ones(3, 2)}), ValueError,
                              r"checkpoint does not match the model \(missing keys \[bias\]; shape mismatches \[weight: checkpoint \(3, 2\) vs model \(2, 2\)\]\)"),
    "save_tensors not tensors": (lambda f: checkpoint.save_tensors(os.path.join(f["dir"], "x.safetensors"), {"a": 3}), ValueError,
                                 r"tensors must map str names to torch.Tensors; bad entries \[a\]"),
    "save_tensors not a dict": (lambda f: checkpoint.save_tensors(os.path.join(f["dir"], "x.safetensors"), [torch.ones(1)]), ValueError,
                                r"tensors must be a dict of name -> torch.Tensor; got list"),
    "load_model pickle file": (lambda f: load_model(f["pt"]), ValueError, PICKLE_WHY),
    "load_model pickle inside .safetensors": (lambda f: load_model(f["pickled"]), ValueError, r"pickle or torch.save data inside"),
    "load_model corrupt weights": (lambda f: load_model(f["corrupt"]), ValueError, CORRUPT),
    "load_model truncated weights": (lambda f: load_model(f["truncated"]), ValueError, CORRUPT),
    "load_model mismatched config": (lambda f: load_model(f["mismatched"]), ValueError,
                                     r"model.safetensors does not match the model \(.*shape mismatches .*\): was it saved with another config\?"),
    "load_model truncated json": (lambda f: load_model(f["bad_json"]), ValueError, r"is not valid JSON \(corrupt or truncated\?\)"),
    "load_model no json": (lambda f: load_model(f["no_json"]), FileNotFoundError, r"config file '.*no_json/model.json' does not exist"),
    "load_model no weights": (lambda f: load_model(f["no_weights"]), FileNotFoundError, r"weights file '.*no_weights/model.safetensors' does not exist"),
    "load_model json list": (lambda f: load_model(f["json_list"]), ValueError, r"must hold a JSON object; got list"),
    "load_model other format": (lambda f: load_model(f["classifier"]), ValueError,
                                r"not a diffcore model spec \(format must be 'diffcore-model'; got 'diffcore-digit-classifier'\)"),
    "load_model unknown network": (lambda f: load_model(f["bad_network"]), ValueError, r"network type must be one of \['mlp', 'unet'\]; got 'transformer'"),
    "load_model .safetensors without .json": (lambda f: load_model(f["lonely"]), FileNotFoundError, r"config file '.*lonely.json' does not exist"),
    "load_model a text file": (lambda f: load_model(f["file"]), ValueError, r"model must be a directory with model.json \+ model.safetensors"),
    "data.load cifar10 garbage": (lambda f: data.load(f"cifar10:{f['cifar_garbage']}"), ValueError,
                                  r"data_batch_1: not a CIFAR-10 python batch \(corrupt, truncated or tampered\)"),
    "data.load cifar10 tampered": (lambda f: data.load(f"cifar10:{f['cifar_evil']}"), ValueError,
                                   r"data_batch_1: not a CIFAR-10 python batch .*refusing posix.getcwd"),
    "data.load folder object npy": (lambda f: data.load(f"folder:{f['npy_objects']}"), ValueError,
                                    r"a.npy: not a readable image \(.npy without objects, or an 8-bit PNG\)"),
    "resume corrupt tensors": (lambda f: _resume(f, "ckpt_corrupt"), ValueError, CORRUPT),
    "resume truncated tensors": (lambda f: _resume(f, "ckpt_truncated"), ValueError, CORRUPT),
    "resume missing tensors": (lambda f: _resume(f, "ckpt_missing_tensors"), ValueError,
                               r"names step 1 but .*checkpoint.safetensors is missing: the checkpoint is incomplete"),
    "resume truncated json": (lambda f: _resume(f, "ckpt_bad_json"), ValueError, r"checkpoint.json' is not valid JSON"),
    "resume steps disagree": (lambda f: _resume(f, "ckpt_steps_disagree"), ValueError,
                              r"\(step 1\) and .*checkpoint.json \(step 7\) disagree: the last checkpoint write was interrupted"),
    "resume foreign json": (lambda f: _resume(f, "ckpt_foreign"), ValueError, r"not a diffcore training checkpoint"),
    "resume other settings": (lambda f: _resume(f, "ckpt_other_settings"), ValueError,
                              r"cannot resume .*: its checkpoint was trained with other settings for \['lr'\]"),
    "resume wrong shapes": (lambda f: _resume(f, "ckpt_wrong_shapes"), ValueError, r"checkpoint model does not match the model \(shape mismatches"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_model_and_checkpoint_files(files, case):
    call, error, pattern = FILE_CASES[case]
    with pytest.raises(error, match=pattern):
        call(files)


def test_the_good_files_load(files):
    """The fixtures' damage is what fails above: the undamaged copies load."""
    model, process, spec = load_model(files["good"])
    assert spec["family"] == "ddpm"
    assert _resume(files, "run") is True


CLI_CASES = {
    # name: (argv with {placeholders} from `files`, pattern of the one stderr line)
    # sample
    "sample --model pickle": (["sample", "--model", "{pt}", "--out", "{out}"], PICKLE_WHY),
    "sample --model pickle inside": (["sample", "--model", "{pickled}", "--out", "{out}"], r"pickle or torch.save data inside"),
    "sample --model missing": (["sample", "--model", "{dir}/nope", "--out", "{out}"], r"model must be a directory with model.json"),
    "sample --model corrupt": (["sample", "--model", "{corrupt}", "--out", "{out}"], CORRUPT),
    "sample --model truncated": (["sample", "--model", "{truncated}", "--out", "{out}"], CORRUPT),
    "sample --model mismatched": (["sample", "--model", "{mismatched}", "--out", "{out}"], r"does not match the model"),
    "sample --model no json": (["sample", "--model", "{no_json}", "--out", "{out}"], r"config file '.*model.json' does not exist"),
    "sample --model wrong format": (["sample", "--model", "{classifier}", "--out", "{out}"], r"not a diffcore model spec"),
    "sample --method": (["sample", "--method", "dpm", "--out", "{out}"], r"argument --method: invalid choice: 'dpm'"),
    "sample --steps 0": (["sample", "--steps", "0", "--out", "{out}"], r"argument --steps: --steps must be >= 1; got 0"),
    "sample --steps text": (["sample", "--steps", "ten", "--out", "{out}"], r"argument --steps: invalid"),
    "sample --n 0": (["sample", "--n", "0", "--out", "{out}"], r"argument --n.*: --n must be >= 1; got 0"),
    "sample --batch-size 0": (["sample", "--batch-size", "0", "--out", "{out}"], r"argument --batch-size.*: --batch-size must be >= 1"),
    "sample --precision": (["sample", "--precision", "fp8", "--out", "{out}"], r"argument --precision: invalid choice: 'fp8'"),
    "sample --device": (["sample", "--device", "gpu0", "--out", "{out}"], r"--device must be a torch device such as 'cpu', 'cuda' or 'cuda:1'; got 'gpu0'"),
    "sample --process with a model": (["sample", "--process", "vp", "--out", "{out}"], r"--process applies to --model gmm only"),
    "sample --process choice": (["sample", "--model", "gmm", "--process", "edm", "--out", "{out}"], r"argument --process: invalid choice: 'edm'"),
    "sample --out a file": (["sample", "--out", "{file}"], r"--out '.*a-file.txt' exists and is not a directory"),
    "sample --model gmm --method ddim --process vp": (["sample", "--model", "gmm", "--method", "ddim", "--process", "vp", "--out", "{out}"],
                                                       r"method='ddim' needs a DDPM process"),
    "sample --backend": (["sample", "--backend", "cuda", "--out", "{out}"], r"argument --backend: invalid choice: 'cuda'"),
    "sample --max-batch 0": (["sample", "--max-batch", "0", "--out", "{out}"], r"argument --batch-size/--max-batch: --batch-size must be >= 1"),
    "sample --shard-size 0": (["sample", "--shard-size", "0", "--out", "{out}"], r"argument --shard-size: --shard-size must be >= 1"),
    "sample --seed -1": (["sample", "--model", "gmm", "--method", "ddim", "--seed", "-1", "--n", "4", "--steps", "2", "--out", "{out}"], r"seed must be >= 0; got -1"),
    # train
    "train --family": (["train", "--family", "gan", "--out", "{out}"], r"argument --family: invalid choice: 'gan'"),
    "train --data unknown": (["train", "--data", "mnist", "--out", "{out}"], r"data must be digits, digits:heldout, toy:NAME"),
    "train --data toy": (["train", "--data", "toy:spiral", "--out", "{out}"], r"toy must be one of"),
    "train --data folder missing": (["train", "--data", "folder:{dir}/no-images", "--out", "{out}"], r"data folder '.*no-images' does not exist"),
    "train --data folder empty": (["train", "--data", "folder:{no_json}", "--out", "{out}"], r"data folder '.*no_json' has no .png or .npy images"),
    "train --data cifar10 tampered": (["train", "--data", "cifar10:{cifar_evil}", "--out", "{out}"], r"not a CIFAR-10 python batch"),
    "train --data cifar10 missing": (["train", "--data", "cifar10:{dir}/cifar", "--out", "{out}"], r"CIFAR-10 batch file\(s\) .* not found"),
    "train --loss": (["train", "--loss", "l1", "--out", "{out}"], r"argument --loss: invalid choice: 'l1'"),
    "train --loss hybrid --family ncsn": (["train", "--loss", "hybrid", "--family", "ncsn", "--out", "{out}"],
                                          r"loss='hybrid' \(learned variance\) is for family='ddpm'"),
    "train --steps 0": (["train", "--steps", "0", "--out", "{out}"], r"argument --steps: --steps must be >= 1"),
    "train --batch-size 0": (["train", "--batch-size", "0", "--out", "{out}"], r"argument --batch-size: --batch-size must be >= 1"),
    "train --lr 0": (["train", "--lr", "0", "--out", "{out}"], r"argument --lr: --lr must be finite and > 0; got 0.0"),
    "train --lr nan": (["train", "--lr", "nan", "--out", "{out}"], r"argument --lr: --lr must be finite and > 0; got nan"),
    "train --warmup -1": (["train", "--warmup", "-1", "--out", "{out}"], r"argument --warmup: --warmup must be >= 0"),
    "train --grad-clip inf": (["train", "--grad-clip", "inf", "--out", "{out}"], r"argument --grad-clip: --grad-clip must be finite and > 0"),
    "train --ema-decay 1.5": (["train", "--ema-decay", "1.5", "--out", "{out}"], r"argument --ema-decay: --ema-decay must lie in \[0, 1\)"),
    "train --ema-decay text": (["train", "--ema-decay", "high", "--out", "{out}"], r"argument --ema-decay: --ema-decay must be a number in \[0, 1\)"),
    "train --precision": (["train", "--precision", "int8", "--out", "{out}"], r"argument --precision: invalid choice"),
    "train --seed -1": (["train", "--seed", "-1", "--out", "{out}"], r"argument --seed: --seed must be >= 0"),
    "train --network not JSON": (["train", "--network", "{{ch: 8}}", "--out", "{out}"], r"argument --network: --network must be a JSON object"),
    "train --network list": (["train", "--network", "[1]", "--out", "{out}"], r"argument --network: --network must be a JSON object"),
    "train --network bad value": (["train", "--network", '{{"ch": -1}}', "--out", "{out}"], r"ch must be >= 1; got -1"),
    "train --network unknown key": (["train", "--network", '{{"chanels": 8}}', "--out", "{out}"], r"unknown U-Net config key\(s\) \['chanels'\]"),
    "train --process bad value": (["train", "--process", '{{"T": 0}}', "--out", "{out}"], r"T must be >= 1; got 0"),
    "train --process schedule": (["train", "--process", '{{"schedule": "sqrt"}}', "--out", "{out}"], r"schedule must be one of \['cosine', 'linear'\]"),
    "train --checkpoint-every 0": (["train", "--checkpoint-every", "0", "--out", "{out}"], r"argument --checkpoint-every: --checkpoint-every must be >= 1"),
    "train --device": (["train", "--device", "tpu", "--out", "{out}"], r"--device must be a torch device"),
    "train --threads 0": (["train", "--threads", "0", "--out", "{out}"], r"argument --threads: --threads must be >= 1"),
    "train --out missing": (["train"], r"the following arguments are required: --out"),
    "train --out a file": (["train", "--out", "{file}"], r"--out '.*a-file.txt' exists and is not a directory"),
    "train --out resumes other settings": (["train", "--out", "{ckpt_other_settings}", "--family", "sde-vp", "--data", "toy:moons"],
                                           r"cannot resume .*: its checkpoint was trained with other settings"),
    # eval
    "eval --model pickle": (["eval", "--model", "{pt}"], PICKLE_WHY),
    "eval --model missing": (["eval", "--model", "{dir}/nope"], r"model must be a directory with model.json"),
    "eval --model corrupt": (["eval", "--model", "{corrupt}"], CORRUPT),
    "eval --samples missing": (["eval", "--samples", "{dir}/none.npz"], r"--samples file '.*none.npz' does not exist"),
    "eval --samples not npz": (["eval", "--samples", "{file}"], r"--samples '.*a-file.txt' must be an .npz with uint8 images"),
    "eval --samples pickle npz": (["eval", "--samples", "{obj_npz}"], r"--samples '.*obj.npz' must be an .npz with uint8 images"),
    "eval --samples float npz": (["eval", "--samples", "{float_npz}"], r"--samples '.*float.npz' must hold uint8 images \[n, H, W, C\] under arr_0; got float64"),
    "eval --samples no arr_0": (["eval", "--samples", "{other_npz}"], r"--samples '.*other.npz' must be an .npz with uint8 images"),
    "eval --n 0": (["eval", "--n", "0"], r"argument --n: --n must be >= 1"),
    "eval --method": (["eval", "--method", "dpm"], r"argument --method: invalid choice: 'dpm'"),
    "eval --steps 0": (["eval", "--steps", "0"], r"argument --steps: --steps must be >= 1"),
    "eval --seed -1": (["eval", "--seed", "-1"], r"argument --seed: --seed must be >= 0"),
    "eval --fid missing": (["eval", "--fid", "{dir}/ref.npz"], r"--fid reference '.*ref.npz' does not exist"),
    # likelihood
    "likelihood --model pickle": (["likelihood", "--model", "{pt}"], PICKLE_WHY),
    "likelihood --model truncated": (["likelihood", "--model", "{truncated}"], CORRUPT),
    "likelihood --model mismatched": (["likelihood", "--model", "{mismatched}"], r"does not match the model"),
    "likelihood --data unknown": (["likelihood", "--data", "mnist"], r"data must be digits, digits:heldout, toy:NAME"),
    "likelihood --data missing folder": (["likelihood", "--data", "folder:{dir}/no-images"], r"data folder '.*no-images' does not exist"),
    "likelihood --data wrong shape": (["likelihood", "--data", "toy:moons"], r"--data gives samples of shape \(2,\); the model takes \(1, 8, 8\)"),
    "likelihood --process": (["likelihood", "--model", "gmm", "--process", "ddpm"], r"argument --process: invalid choice: 'ddpm'"),
    "likelihood --n 0": (["likelihood", "--n", "0"], r"argument --n: --n must be >= 1"),
    "likelihood --divergence": (["likelihood", "--divergence", "trace"], r"argument --divergence: invalid choice: 'trace'"),
    "likelihood --probes 0": (["likelihood", "--probes", "0"], r"argument --probes: --probes must be >= 1"),
    "likelihood --tol -1": (["likelihood", "--tol", "-1"], r"argument --tol: --tol must be finite and > 0; got -1.0"),
    "likelihood --tol nan": (["likelihood", "--tol", "nan"], r"argument --tol: --tol must be finite and > 0; got nan"),
    "likelihood --seed -1": (["likelihood", "--seed", "-1"], r"argument --seed: --seed must be >= 0"),
    # bench
    "bench unknown name": (["bench", "gpu_flops"], r"argument name: invalid choice: 'gpu_flops'"),
    # info and the top level
    "info --bogus": (["info", "--bogus"], r"unrecognized arguments: --bogus"),
    "no subcommand": ([], r"the following arguments are required: command"),
    "unknown subcommand": (["serve"], r"argument command: invalid choice: 'serve'"),
}
if not torch.cuda.is_available():
    CLI_CASES["sample --device cuda"] = (["sample", "--device", "cuda", "--out", "{out}"], r"--device='cuda': CUDA is not available here")
    CLI_CASES["train --device cuda"] = (["train", "--device", "cuda:0", "--out", "{out}"], r"--device='cuda:0': CUDA is not available here")


@pytest.fixture(scope="module")
def npz_files(files):
    import numpy as np

    d = files["dir"]
    np.savez(os.path.join(d, "obj.npz"), arr_0=np.array([{"a": 1}], dtype=object))
    np.savez(os.path.join(d, "float.npz"), arr_0=np.zeros((2, 8, 8, 1)))
    np.savez(os.path.join(d, "other.npz"), images=np.zeros((2, 8, 8, 1), dtype=np.uint8))
    return {**files, **{k: os.path.join(d, f"{k.split('_')[0]}.npz") for k in ("obj_npz", "float_npz", "other_npz")}}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_usage_error_exits_2_with_one_line(npz_files, tmp_path, capsys, case):
    argv, pattern = CLI_CASES[case]
    out = tmp_path / "out"
    argv = [a.format(**npz_files, out=out) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as e:   # argparse's own usage errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("diffcore"), err
    assert re.search(pattern, last), f"{pattern!r} not in {last!r}"
    assert not out.exists() or not any(out.iterdir()), "a failed command left files behind"


def test_cli_backend_that_cannot_run_exits_2(tmp_path, capsys, monkeypatch):
    """--backend naming a backend that is not built here is a usage error, not a traceback."""
    from diffcore import ops

    monkeypatch.setitem(ops._loaded, "native", None)   # as if the extension had failed to build
    rc = main(["sample", "--backend", "native", "--n", "2", "--steps", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert re.search(r"backend='native' cannot run \w+ on cpu here", err.strip().splitlines()[-1]), err


def test_cli_value_error_is_one_line(capsys, monkeypatch):
    """A multi-line message raised by validation comes out as one line with exit 2."""
    import diffcore.commands.likelihood as lk

    def boom(args):
        raise ValueError("first line\nsecond line")
    monkeypatch.setattr(lk, "run", boom)
    assert main(["likelihood"]) == 2
    err = capsys.readouterr().err
    assert err == "diffcore: error: first line second line\n"


def test_a_failed_write_leaves_no_torn_file_and_no_temporary(tmp_path):
    """checkpoint's writes go to a temporary and are renamed: a writer that dies part-way
    leaves the previous file intact and nothing else."""
    target = tmp_path / "model.safetensors"
    checkpoint.save_tensors(str(target), {"w": torch.ones(3)})
    before = target.read_bytes()

    def dies_half_way(tmp):
        with open(tmp, "wb") as f:
            f.write(before[: len(before) // 2])
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        checkpoint._atomic(str(target), dies_half_way)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    with pytest.raises(ValueError, match="tensors must map str names"):
        checkpoint.save_tensors(str(tmp_path / "new.safetensors"), {"w": "not a tensor"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
