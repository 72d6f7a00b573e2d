"""`fastfn robust-sweep`: settings, a two-point sweep on tiny synthetic data, resuming."""
from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch

import fastfn.evaluation.sweep as sweep_module
from fastfn.evaluation.demo import DemoConfig, run_demo
from fastfn.evaluation.sweep import SweepPoint, parse_point, point_setting, run_sweep, vary_points
from fastfn.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture
def tiny_cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFN_CACHE", str(tmp_path / "cache"))
    d = DemoConfig()
    return DemoConfig(size=32, train_volumes=1, val_volumes=1, slices=3, chans=4, pools=1,
                      steps=4, batch_size=2, eval_slices=3, progress=False, robust_start=0.5,
                      robust=dataclasses.replace(d.robust, attack=d.robust.attack.replace(
                          size=(3, 5), random_restarts=1, pgd_restarts=1, pgd_steps=1)),
                      attack=d.attack.replace(size=(3, 3), random_restarts=2, pgd_restarts=1, pgd_steps=1))


def test_points_from_text():
    p = parse_point("local:attack.features.intensity_mode=local;attack.features.intensity=[0, 0.5];beta=0.2")
    assert p == SweepPoint("local", {"attack.features.intensity_mode": "local",
                                     "attack.features.intensity": [0, 0.5], "beta": 0.2})
    assert parse_point("base") == SweepPoint("base", {})
    pts = vary_points("beta=0.03,0.1,1e-2")
    assert [(p.name, p.changes) for p in pts] == [("beta=0.03", {"beta": 0.03}), ("beta=0.1", {"beta": 0.1}),
                                                   ("beta=1e-2", {"beta": 0.01})]
    pairs = vary_points("attack.features.intensity=[0,1],[0, 0.5]")
    assert [p.changes["attack.features.intensity"] for p in pairs] == [[0, 1], [0, 0.5]]
    for bad in ("standard", "a/b", ".x", ""):
        with pytest.raises(ValueError, match="sweep point name"):
            SweepPoint(bad)
    with pytest.raises(ValueError, match="KEY=V1,V2"):
        vary_points("beta")


def test_point_settings_apply_to_the_base_robust_config(tiny_cfg):
    robust, start = point_setting(tiny_cfg, SweepPoint("p", {"beta": 0.3, "start": 0.25,
                                                             "attack.features.intensity_mode": "local"}))
    assert robust == dataclasses.replace(
        tiny_cfg.robust, beta=0.3, attack=tiny_cfg.robust.attack.replace(intensity_mode="local"))
    assert start == 0.25
    assert point_setting(tiny_cfg, SweepPoint("p"))[1] == tiny_cfg.robust_start
    with pytest.raises(KeyError, match="betta"):
        point_setting(tiny_cfg, SweepPoint("p", {"betta": 1.0}))
    with pytest.raises(ValueError, match="start must be in"):
        point_setting(tiny_cfg, SweepPoint("p", {"start": 1.0}))
    with pytest.raises(ValueError, match="robust.beta"):
        point_setting(tiny_cfg, SweepPoint("p", {"beta": -1}))


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_two_point_sweep_resumes_and_matches_uninterrupted_training(tmp_path, tiny_cfg, monkeypatch):
    points = [SweepPoint("beta=0.1", {"beta": 0.1}),
              SweepPoint("ramp", {"beta": 0.2, "beta_ramp_steps": 2, "normalize_to_clean": True, "start": 0.25})]
    full = run_sweep(tmp_path / "full", tiny_cfg, points, checkpoint_every=1)
    out = tmp_path / "full"
    assert [p["name"] for p in full["points"]] == ["beta=0.1", "ramp"]
    assert (out / "trade_off.png").stat().st_size > 0 and (out / "sweep.md").is_file()
    assert json.loads((out / "sweep.json").read_text()) == json.loads(json.dumps(full))
    ref = full["reference"]
    for p in full["points"]:
        assert p["n_slices"] == ref["n_slices"] == 3
        c = p["vs_standard"]
        assert c["ssim_drop"] == pytest.approx(ref["clean"]["ssim"] - p["clean"]["ssim"])
        assert c["fn_rate_pgd_at_most_half"] == (
            p["pgd"]["fn_rate"] <= 0.5 * ref["pgd"]["fn_rate"] if ref["pgd"]["fn_rate"] > 0 else None)
        assert 0 <= p["pgd"]["fn_rate_at_1e-3"] <= 1
    assert [p["start_step"] for p in full["points"]] == [2, 1]
    md = (out / "sweep.md").read_text()
    assert "| standard | - |" in md and "| ramp | 1 |" in md
    # the standard run kept its state at both start steps; the points started from it
    assert (out / "standard" / "branch_0000001.pt").is_file() and (out / "standard" / "branch_0000002.pt").is_file()

    # a branched point equals the demo's robust model trained from scratch with that setting
    demo = run_demo(tmp_path / "demo", dataclasses.replace(tiny_cfg, robust=dataclasses.replace(
        tiny_cfg.robust, beta=0.1)))
    assert demo["robust"]["clean"]["ssim"] == full["points"][0]["clean"]["ssim"]
    for k, v in _weights(tmp_path / "demo" / "robust" / "last.pt").items():
        assert torch.equal(v, _weights(out / "points" / "beta=0.1" / "last.pt")[k]), k

    # a finished sweep is not retrained (or re-evaluated) when run again
    fits = []
    monkeypatch.setattr(Trainer, "fit", lambda self, until=None: fits.append(until))
    again = run_sweep(out, tiny_cfg, points, checkpoint_every=1)
    monkeypatch.undo()
    assert fits == [] and again == full

    # interrupted in the second point's step 3: the rerun continues from its last.pt
    part = tmp_path / "part"
    real_loss = sweep_module.make_robust_loss

    def failing_loss(config, **kw):
        fn = real_loss(config, **kw)

        @functools.wraps(fn)  # keeps its combine_gradients (the demo's gradient cap)
        def loss(model, batch, step):
            if config.beta_ramp_steps and step == 3:
                raise KeyboardInterrupt
            return fn(model, batch, step)
        return loss
    monkeypatch.setattr(sweep_module, "make_robust_loss", failing_loss)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(part, tiny_cfg, points, checkpoint_every=1)
    monkeypatch.undo()
    assert (part / "points" / "beta=0.1" / "point.json").is_file()
    assert not (part / "points" / "ramp" / "point.json").is_file()
    assert torch.load(part / "points" / "ramp" / "last.pt", weights_only=True)["step"] == 3
    resumed_from = []
    real_resume = Trainer.resume
    monkeypatch.setattr(Trainer, "resume", lambda self, path: (resumed_from.append(path.name),
                                                                real_resume(self, path))[1])
    finished = run_sweep(part, tiny_cfg, points, checkpoint_every=1)
    assert resumed_from == ["last.pt"]                  # neither the standard model nor beta=0.1 again
    for k, v in _weights(out / "points" / "ramp" / "last.pt").items():
        assert torch.equal(v, _weights(part / "points" / "ramp" / "last.pt")[k]), k
    assert [p["clean"] for p in finished["points"]] == [p["clean"] for p in full["points"]]

    # the same name with another setting is refused, before any training
    with pytest.raises(ValueError, match="another setting"):
        run_sweep(part, tiny_cfg, [SweepPoint("ramp", {"beta": 0.5})])

    # a setting stored before some of today's RobustConfig fields existed (so it trained
    # with their defaults) is the same setting: the rerun neither refuses nor retrains it
    setting = part / "points" / "beta=0.1" / "setting.json"
    record = json.loads(setting.read_text())
    assert record["robust"]["gradient_projection"] is False           # the field's default
    del record["robust"]["gradient_projection"]
    setting.write_text(json.dumps(record))
    monkeypatch.setattr(Trainer, "fit", lambda self, until=None: fits.append(until))
    assert run_sweep(part, tiny_cfg, points, checkpoint_every=1)["points"] == finished["points"]
    assert fits == []


def test_robust_sweep_command(tmp_path, tiny_cfg, capsys):
    from fastfn.cli import main
    out = tmp_path / "sw"
    flags = ["--size", "32", "--train-volumes", "1", "--val-volumes", "1", "--slices", "3", "--steps", "2",
             "--batch-size", "2", "--chans", "4", "--pools", "1", "--eval-slices", "2",
             "--robust-size", "3,5", "--robust-pgd-steps", "1", "--attack-random-restarts", "2",
             "--attack-pgd-restarts", "1", "--attack-pgd-steps", "1", "--attack-size", "3",
             "--no-progress", "--device", "cpu"]
    assert main(["robust-sweep", "--out", str(out), "--vary", "beta=0.1,0.2",
                 "--point", "local:attack.features.intensity_mode=local", *flags]) == 0
    summary = json.loads((out / "sweep.json").read_text())
    assert [p["name"] for p in summary["points"]] == ["beta=0.1", "beta=0.2", "local"]
    assert summary["points"][2]["robust"]["attack"]["features"]["intensity_mode"] == "local"
    assert summary["points"][1]["robust"]["beta"] == 0.2 and summary["points"][1]["start_step"] == 1
    assert "| local | 1 |" in capsys.readouterr().out
    assert main(["robust-sweep", "--out", str(out), *flags]) == 2
    assert "at least one setting" in capsys.readouterr().err
