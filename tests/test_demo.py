"""The main job end to end at a toy scale: data, two trainings, attacks, report, summary."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from fastfn.evaluation.demo import DemoConfig, run_demo


def printed_md(out: Path) -> str:
    return (out / "evaluation" / "robustness.md").read_text()


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture
def tiny_cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFN_CACHE", str(tmp_path / "cache"))
    d = DemoConfig()
    return DemoConfig(size=32, train_volumes=1, val_volumes=1, slices=3, chans=4, pools=1,
                      steps=2, batch_size=2, eval_slices=3, progress=False,
                      robust=dataclasses.replace(d.robust, attack=d.robust.attack.replace(
                          size=(3, 5), random_restarts=1, pgd_restarts=1, pgd_steps=1)),
                      attack=d.attack.replace(size=(3, 3), random_restarts=2, pgd_restarts=1, pgd_steps=1),
                      contrast_detail=dataclasses.replace(d.contrast_detail, sizes=(2.0, 3.0), contrasts=(0.5, 1.0)),
                      contrast_detail_slices=2)


def test_demo_runs_end_to_end_and_writes_its_report(tmp_path, tiny_cfg, capsys):
    tiny_cfg = dataclasses.replace(tiny_cfg, steps=4, robust_start=0.5)
    summary = run_demo(tmp_path / "demo", tiny_cfg)
    out = tmp_path / "demo"
    assert summary["robust_start_step"] == 2
    # the robust run logged its adversarial term as off for steps 1-2 and on for 3-4
    rows = [json.loads(l) for l in (out / "robust" / "metrics.jsonl").read_text().splitlines()]
    robust_s = {r["step"]: r["extra/robust_s"] for r in rows if r["split"] == "train"}
    assert robust_s[2] == 0.0 and robust_s[4] > 0.0
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    report = json.loads((out / "evaluation" / "robustness.json").read_text())
    assert report["models"] == ["standard", "robust"]
    r = report["results"]["random:4x@0.08"]
    assert on_disk["standard"]["fn_rate_pgd"] == r["standard"]["pgd"]["fn_rate"]
    assert on_disk["robust"]["clean"]["ssim"] == r["robust"]["clean"]["mean"]["ssim"]
    assert r["standard"]["pgd"]["n_slices"] == 3
    assert on_disk["targets"]["clean_ssim_drop"] == pytest.approx(
        r["standard"]["clean"]["mean"]["ssim"] - r["robust"]["clean"]["mean"]["ssim"])
    for name in ("standard", "robust"):
        assert (out / name / "last.pt").is_file()
    for f in on_disk["figures"]:
        assert Path(f).is_file()
    assert "contrast_detail.png" in " ".join(on_disk["figures"]) and "Contrast-detail curve" in printed_md(out)
    assert set(on_disk["contrast_detail"]) == {"threshold", "sizes", "standard", "robust"}
    lesions = json.loads((out / "evaluation" / "lesions.json").read_text())
    assert lesions["n_boxes"] > 0 and lesions["unmatched_boxes"] == 0
    assert on_disk["lesions"] == {label: {m: v["nmse_pooled"] for m, v in per.items()}
                                  for label, per in lesions["labels"].items()}
    printed = capsys.readouterr().out
    assert "| random:4x@0.08 | robust |" in printed
    assert str(out / "evaluation" / "robustness.md") in printed.splitlines()[-1]


def test_demo_training_masks_are_reproducible_and_fresh_per_epoch(tiny_cfg):
    """Both models (and a rerun) see the same training masks; epochs draw new ones."""

    from fastfn.evaluation.demo import _loaders, data_sources

    def masks(epochs: int):
        train, _ = _loaders(data_sources(tiny_cfg, multicoil=False), False, tiny_cfg)
        out = []
        for epoch in range(epochs):
            train.batch_sampler.set_position(epoch)
            out += [b["mask"].clone() for b in train]
        return out
    torch.manual_seed(1)
    first = masks(2)
    torch.manual_seed(2)            # the global RNG plays no part
    second = masks(2)
    assert len(first) == len(second) == 4
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], first[2])     # same batch position, next epoch: new masks


def test_demo_rejects_a_bad_robust_start(tmp_path, tiny_cfg):
    with pytest.raises(ValueError, match="robust_start"):
        run_demo(tmp_path / "demo", dataclasses.replace(tiny_cfg, robust_start=1.0))
    assert not (tmp_path / "demo" / "standard").exists()     # nothing trained


TINY_FLAGS = ["--steps", "2", "--batch-size", "2", "--chans", "4", "--pools", "1", "--eval-slices", "2",
              "--robust-size", "3,5", "--robust-pgd-steps", "1", "--attack-random-restarts", "2",
              "--attack-pgd-restarts", "1", "--attack-pgd-steps", "1", "--attack-size", "3",
              "--no-progress", "--device", "cpu"]


def test_demo_runs_on_a_fastmri_folder_of_the_real_knee_geometry(tmp_path, capsys):
    from fastfn.cli import main
    from fastmri_geometry import write_knee_geometry_folder
    data = write_knee_geometry_folder(tmp_path / "knee")        # 640 x 368, padding [18, 350), 320 x 320
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(data), "--out", str(out), *TINY_FLAGS]) == 0
    summary = json.loads((out / "summary.json").read_text())
    report = json.loads((out / "evaluation" / "robustness.json").read_text())
    assert report["data"] == str(data / "val") and summary["n_slices"] == 2
    assert summary["config"]["data"] == str(data) and "lesions" not in summary   # no boxes for this data
    for name in ("standard", "robust"):
        ck = torch.load(out / name / "last.pt", weights_only=True)
        assert ck["model_name"] == "unet" and ck["config"]["data"]["mask"] == "random:4x@0.08"


def test_demo_bad_data_fails_before_any_training(tmp_path, capsys):
    from fastfn.cli import main
    from fastmri_geometry import write_knee_geometry_folder
    (tmp_path / "empty").mkdir()
    cases = [(["--data", str(tmp_path / "empty")], "no usable .h5"),
             (["--data", str(write_knee_geometry_folder(tmp_path / "mc", coils=2))], "singlecoil"),
             (["--data", str(write_knee_geometry_folder(tmp_path / "sc")), "--crop-size", "700"], "crop_size (700, 700) is larger than its target image (320, 320)")]
    for i, (flags, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert main(["demo", *flags, "--out", str(out), *TINY_FLAGS]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_demo_trains_a_multicoil_varnet_on_multicoil_synthetic_data(tmp_path, tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, model="varnet", coils=3, model_config=dict(
        num_cascades=1, chans=4, pools=1, sens_chans=2, sens_pools=1))
    summary = run_demo(tmp_path / "demo", cfg)
    ck = torch.load(tmp_path / "demo" / "robust" / "last.pt", weights_only=True)
    assert ck["model_name"] == "varnet" and ck["model_config"]["num_cascades"] == 1
    assert summary["n_slices"] == 3 and "lesions" in summary


def test_demo_lr_schedule_sets_both_models_and_every_sweep_point(tiny_cfg):
    from fastfn.evaluation.demo import train_config
    from fastfn.evaluation.sweep import train_config as sweep_train_config
    cpu = torch.device("cpu")
    assert train_config(tiny_cfg, cpu).sched.name == "none"
    cosine = dataclasses.replace(tiny_cfg, lr_schedule="cosine")
    demo = train_config(cosine, cpu)
    assert demo.sched.name == "cosine" and demo.sched.min_lr == 0.0 and demo.steps == cosine.steps
    sweep = sweep_train_config(cosine, cpu, 1)
    assert dataclasses.replace(sweep, ckpt_every=demo.ckpt_every) == demo and sweep.ckpt_every == 1
    with pytest.raises(ValueError, match="demo.lr_schedule"):
        train_config(dataclasses.replace(tiny_cfg, lr_schedule="linear"), cpu)
