"""`fastfn train` / `fastfn eval` end to end on a tiny synthetic set, and their bad-input paths."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastfn.cli import build_parser, main
from fastfn.train import checkpoint as ckpt
from test_train_support import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_UNET = ["--model", "unet", "--model-config", "chans=2", "--model-config", "num_pool_layers=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A fastMRI-format single-coil set: train/ (3 volumes) and val/ (2), 2 slices, 32 px."""
    from fastfn.data import write_synthetic_dataset
    root = tmp_path_factory.mktemp("data")
    write_synthetic_dataset(root / "train", 3, 2, size=32, seed=0)
    write_synthetic_dataset(root / "val", 2, 2, size=32, seed=1000)
    return root


def _train(data, out, *extra):
    return main(["train", *TINY_UNET, "--data", str(data), "--out", str(out), "--steps", "2",
                 "--val-every", "2", "--batch-size", "2", "--no-progress", "--no-tensorboard",
                 "--panels", "1", *extra])


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "unet"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: set up before the one_thread fixture
    try:
        assert _train(data, out) == 0
    finally:
        torch.set_num_threads(before)
    return out


def test_train_writes_a_run_and_eval_reproduces_its_validation(run, data, tmp_path):
    names = {p.name for p in run.iterdir()}
    assert {"last.pt", "best.pt", "config.yaml", "metrics.jsonl", "train.csv", "val.csv",
            "summary.json", "panels"} <= names
    best = ckpt.load_checkpoint(run / "best.pt")
    assert best["model_name"] == "unet" and best["model_config"]["chans"] == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2
    # eval of best.pt on the validation folder = the trainer's own validation numbers
    assert main(["eval", "--ckpt", str(run / "best.pt"), "--data", str(data / "val"),
                 "--out", str(tmp_path / "ev"), "--panels", "1"]) == 0
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["mask"] == "random:4x@0.08" and report["volumes"] == 2 and report["slices"] == 4
    for k in ("nmse", "psnr", "ssim"):
        assert report["model"]["mean"][k] == pytest.approx(best["metrics"][k], rel=1e-6)
        assert report["zero_filled"]["mean"][k] == pytest.approx(best["metrics"][f"zf_{k}"], rel=1e-6)
    assert set(report["model"]["per_volume"]) == set(report["zero_filled"]["per_volume"])
    assert len(list((tmp_path / "ev" / "panels").glob("*.png"))) == 1


def test_evaluate_checkpoint_returns_what_it_writes(run, data, tmp_path):
    """The library function behind `fastfn eval` (the evaluation layer's)."""
    from fastfn.evaluation.checkpoint import evaluate_checkpoint
    best = ckpt.load_checkpoint(run / "best.pt")
    report = evaluate_checkpoint(run / "best.pt", tmp_path / "ev", data=data / "val", max_batches=1)
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text()) == report
    assert report["checkpoint"] == str(run / "best.pt") and report["data"] == str(data / "val")
    assert (report["model_name"], report["step"]) == ("unet", best["step"])
    assert report["model_config"] == best["model_config"]
    assert report["volumes"] == 1 and report["slices"] == 1      # one batch of one slice
    assert not (tmp_path / "ev" / "panels").exists()


def test_resume_continues_and_refuses_to_overwrite(run, data, tmp_path, capsys):
    out = tmp_path / "r"
    assert _train(data, out) == 0
    before = _snapshot(out)
    assert _train(data, out) == 2                      # no --resume: refused, nothing touched
    assert "already holds" in capsys.readouterr().err
    assert _snapshot(out) == before
    assert _train(data, out, "--resume", "--steps", "4") == 0
    assert ckpt.load_checkpoint(out / "last.pt")["step"] == 4
    vals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in vals if r["split"] == "val"] == [2, 4]


def test_resume_with_another_model_or_a_corrupt_checkpoint(data, tmp_path, capsys):
    out = tmp_path / "r"
    assert _train(data, out) == 0
    before = _snapshot(out)
    code = main(["train", "--model", "cascade", "--data", str(data), "--out", str(out),
                 "--resume", "--steps", "4", "--no-progress"])
    assert code == 2 and "'unet' model, not 'cascade'" in capsys.readouterr().err
    code = _train(data, out, "--resume", "--steps", "4", "--model-config", "chans=4")
    assert code == 2 and "chans: checkpoint 2 vs requested 4" in capsys.readouterr().err
    assert _snapshot(out) == before
    (out / "last.pt").write_bytes(b"\x00garbage" * 50)
    before = _snapshot(out)
    assert _train(data, out, "--resume", "--steps", "4") == 2
    assert "corrupt" in capsys.readouterr().err
    assert _snapshot(out) == before
    code = main(["eval", "--ckpt", str(out / "last.pt"), "--data", str(data / "val"),
                 "--out", str(tmp_path / "ev")])
    assert code == 2 and "corrupt" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()
    code = main(["eval", "--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "ev")])
    assert code == 2 and "missing.pt does not exist" in capsys.readouterr().err


def test_data_folder_without_usable_files(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no volumes here")
    assert main(["train", *TINY_UNET, "--data", str(empty), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "has no usable .h5" in err and str(empty) in err
    assert not (tmp_path / "o").exists()
    bad = tmp_path / "bad"
    (bad / "train").mkdir(parents=True)
    (bad / "val").mkdir()
    (bad / "train" / "broken.h5").write_bytes(b"not hdf5")
    (bad / "val" / "broken.h5").write_bytes(b"not hdf5")
    assert main(["train", *TINY_UNET, "--data", str(bad), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert "broken.h5" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_mask_that_does_not_fit(data, run, tmp_path, capsys):
    mask = tmp_path / "mask24.npy"
    m = np.zeros(24, dtype=np.float32)
    m[::3] = 1
    m[10:14] = 1
    np.save(mask, m)
    assert _train(data, tmp_path / "o", "--mask", str(mask)) == 2
    err = capsys.readouterr().err
    assert "mask24.npy has 24 columns but the k-space has 32" in err
    assert not (tmp_path / "o").exists()
    # a spec whose centre fraction gives no centre column at this width
    assert _train(data, tmp_path / "o", "--mask", "random:4x@0.001") == 2
    assert "samples no centre columns" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["eval", "--ckpt", str(run / "best.pt"), "--data", str(data / "val"),
                 "--mask", str(mask), "--out", str(tmp_path / "ev")]) == 2
    assert "24 columns" in capsys.readouterr().err and not (tmp_path / "ev").exists()
    # a fitting .npy mask is accepted
    m32 = np.zeros(32, dtype=np.float32)
    m32[::4] = 1
    m32[14:18] = 1
    np.save(tmp_path / "mask32.npy", m32)
    assert main(["eval", "--ckpt", str(run / "best.pt"), "--data", str(data / "val"),
                 "--mask", str(tmp_path / "mask32.npy"), "--out", str(tmp_path / "ev")]) == 0


def test_config_precedence(tmp_path):
    from fastfn.cli.train import build_config
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("steps: 50\noptim: {lr: 0.01}\nmodel_config: {chans: 8}\n")
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r"), "--config",
                                      str(cfg_file), "--set", "optim.lr=0.02", "--set", "steps=60",
                                      "--steps", "70", "--model-config", "num_pool_layers=2"])
    cfg = build_config(args)
    assert cfg.steps == 70 and cfg.optim.lr == pytest.approx(0.02)
    assert cfg.model_config == {"chans": 8, "num_pool_layers": 2}


def test_help_explains_every_option(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in ("train", "eval"):
        for action in sub.choices[name]._actions:
            assert action.help and action.help.strip(), (name, action.option_strings)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--resume" in text and "torchrun" in text and "synthetic default data" in text


def test_varnet_trains_on_multicoil_data_and_refuses_single_coil(data, tmp_path, capsys):
    from fastfn.data import write_synthetic_dataset
    mc = tmp_path / "mc"
    write_synthetic_dataset(mc / "train", 2, 2, coils=2, size=32, seed=0)
    write_synthetic_dataset(mc / "val", 1, 2, coils=2, size=32, seed=1000)
    varnet = ["--model", "varnet"] + [a for kv in ("num_cascades=1", "chans=2", "pools=1",
                                                   "sens_chans=2", "sens_pools=1")
                                      for a in ("--model-config", kv)]
    assert main(["train", *varnet, "--data", str(mc), "--out", str(tmp_path / "v"), "--steps", "1",
                 "--val-every", "1", "--no-progress", "--no-tensorboard", "--panels", "0"]) == 0
    val = [json.loads(line) for line in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()
           if '"val"' in line]
    assert len(val) == 1 and np.isfinite(val[0]["psnr"]) and np.isfinite(val[0]["zf_psnr"])
    model, meta = ckpt.load_reconstructor(tmp_path / "v" / "last.pt")
    assert meta["model_name"] == "varnet" and model.multicoil
    # single-coil files for a multi-coil model: a clear error, nothing written
    capsys.readouterr()
    assert main(["train", *varnet, "--data", str(data), "--out", str(tmp_path / "w"),
                 "--steps", "1", "--no-progress"]) == 2
    assert "multicoil" in capsys.readouterr().err and not (tmp_path / "w").exists()


def test_no_data_uses_the_synthetic_default(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFN_CACHE", str(tmp_path / "cache"))
    synth = ["--synth-size", "32", "--set", "data.synth_volumes=2",
             "--set", "data.synth_val_volumes=1", "--set", "data.synth_slices=2"]
    assert main(["train", *TINY_UNET, *synth, "--out", str(tmp_path / "r"), "--steps", "1",
                 "--val-every", "1", "--no-progress", "--no-tensorboard", "--panels", "0"]) == 0
    generated = sorted(p.name for p in (tmp_path / "cache" / "synthetic").iterdir())
    assert len(generated) == 2 and "train" in generated[0] and "val" in generated[1]
    # eval without --data scores the validation set the run was trained with
    assert main(["eval", "--ckpt", str(tmp_path / "r" / "last.pt"), "--out", str(tmp_path / "e")]) == 0
    report = json.loads((tmp_path / "e" / "metrics.json").read_text())
    best = ckpt.load_checkpoint(tmp_path / "r" / "last.pt")["metrics"]
    assert report["volumes"] == 1 and report["model"]["mean"]["psnr"] == pytest.approx(best["psnr"], rel=1e-6)


def test_resumed_cli_run_equals_an_uninterrupted_one(data, tmp_path):
    """The real data pipeline (per-epoch training masks, mid-epoch fast-forward): 2 steps
    + resume to 4 ends with the weights of 4 uninterrupted steps (constant LR)."""
    assert _train(data, tmp_path / "a", "--steps", "4", "--panels", "0") == 0
    assert _train(data, tmp_path / "b", "--steps", "2", "--panels", "0") == 0  # 3 batches/epoch
    assert _train(data, tmp_path / "b", "--resume", "--steps", "4", "--panels", "0") == 0
    a = ckpt.load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_robust_flags_add_the_adversarial_term(data, tmp_path):
    """--robust-attack/--robust-beta switch on the FNAF term: it is logged per step,
    added to the clean loss, and recorded in the run's config and checkpoints."""
    import csv

    import yaml

    out = tmp_path / "robust"
    assert _train(data, out, "--robust-attack", "pgd", "--robust-beta", "0.5",
                  "--set", "robust.attack.features.size=[3, 6]", "--set", "robust.attack.pgd_steps=1") == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["robust"]["attack"]["method"] == "pgd" and cfg["robust"]["beta"] == 0.5
    stored = ckpt.load_checkpoint(out / "last.pt")["config"]["robust"]["attack"]
    assert stored["features"]["size"] == [3, 6] and stored["pgd_steps"] == 1
    rows = list(csv.DictReader((out / "train.csv").open()))
    assert rows, "no training rows logged"
    for row in rows:
        extra = float(row["loss_extra"])
        assert extra > 0
        assert float(row["loss"]) == pytest.approx(float(row["loss_clean"]) + extra, rel=1e-5)
