"""The Trainer: exact resume, best/last checkpoints, logs and panels, the extra_loss hook,
optimisers and LR schedules. Uses a toy reconstructor on in-memory slices (fast)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from fastfn.train import checkpoint as ckpt
from fastfn.train.config import TrainConfig
from fastfn.train.data import make_loader
from fastfn.train.logging import read_jsonl
from fastfn.train.trainer import Trainer, amp_dtype, build_optimizer, seed_everything
from test_train_support import ToyRecon, ToySlices, collate, one_thread  # noqa: F401  (one_thread: fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw) -> TrainConfig:
    base = dict(model="toy", steps=12, val_every=4, log_every=1, panels=1, progress=False,
                tensorboard=False, grad_clip=1.0, device="cpu")
    base.update(kw)
    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **base})
    return cfg.replace({"optim.name": "adamw", "sched.name": "cosine", "data.batch_size": 2})


def _trainer(cfg, out, seed=0, **kw) -> Trainer:
    seed_everything(seed)
    train = make_loader(ToySlices(seed=1), cfg.data.batch_size, seed=cfg.seed, collate_fn=collate)
    val = make_loader(ToySlices(volumes=2, seed=2, prefix="val"), 2, shuffle=False,
                      collate_fn=collate)
    return Trainer(ToyRecon(), cfg, train, val, out_dir=out, model_config={"chans": 4}, **kw)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    cfg = _cfg(panels=0, steps=8)  # 6 batches per epoch: the run crosses an epoch
    full = _trainer(cfg, tmp_path / "full")
    full.fit()
    # "killed" after step 5: the last checkpoint is step 4 (mid-epoch: 6 batches/epoch)
    killed = _trainer(cfg, tmp_path / "killed")
    killed.fit(until=5)
    assert ckpt.load_checkpoint(tmp_path / "killed" / "last.pt")["step"] == 4
    # a fresh process: another seed, other initial weights; resume must restore everything
    resumed = _trainer(cfg, tmp_path / "killed", seed=123)
    resumed.resume(tmp_path / "killed" / "last.pt")
    assert resumed.step == 4
    resumed.fit()
    a, b = _weights(full.model), _weights(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the steps redone after the checkpoint are not logged twice
    rec_full = [(r["split"], r["step"], r.get("loss")) for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")]
    rec_res = [(r["split"], r["step"], r.get("loss")) for r in read_jsonl(tmp_path / "killed" / "metrics.jsonl")]
    assert rec_full == rec_res
    # and training moved the weights at all
    fresh = ToyRecon().state_dict()
    assert any(not torch.equal(fresh[k], a[k]) for k in a)


def test_best_last_logs_and_panels(tmp_path):
    cfg = _cfg(steps=8, val_every=2, ckpt_every=4)
    tr = _trainer(cfg, tmp_path)
    final = tr.fit()
    recs = read_jsonl(tmp_path / "metrics.jsonl")
    val = [r for r in recs if r["split"] == "val"]
    assert [r["step"] for r in val] == [2, 4, 6, 8]
    best = max(r["ssim"] for r in val)
    best_ckpt = ckpt.load_checkpoint(tmp_path / "best.pt")
    assert best_ckpt["metrics"]["ssim"] == pytest.approx(best)
    assert best_ckpt["step"] == [r["step"] for r in val if r["ssim"] == best][0]
    last = ckpt.load_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 8 and last["best_ssim"] == pytest.approx(best)
    assert final["ssim"] == pytest.approx(val[-1]["ssim"])
    assert {"psnr", "nmse", "zf_psnr", "zf_ssim"} <= set(val[-1])
    train = [r for r in recs if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 9))
    assert all(math.isfinite(r["loss"]) and r["slices_per_s"] > 0 for r in train)
    header = (tmp_path / "train.csv").read_text().splitlines()[0].split(",")
    assert {"step", "loss", "lr", "grad_norm"} <= set(header)
    pngs = sorted((tmp_path / "panels").rglob("*.png"))
    assert len(pngs) == 4 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    # the checkpoint rebuild path needs the real registry; the stored spec is ours
    assert last["model_name"] == "toy" and last["model_config"] == {"chans": 4}
    assert json.loads(json.dumps(last["config"]))["steps"] == 8


def test_extra_loss_is_added_to_the_clean_loss(tmp_path):
    """Adam's first moment after one step is (1 - beta1) * grad: an extra loss equal
    to the clean loss doubles it."""
    cfg = _cfg(grad_clip=None).replace({"optim.name": "adam", "sched.name": "none"})
    calls = []

    def extra(model, batch, step):
        calls.append((model, step, batch["masked_kspace"].device))
        pred = model(batch["masked_kspace"], batch["mask"], crop_size=batch["target"].shape[-2:])
        loss = torch.nn.functional.l1_loss(pred, batch["target"])
        return loss, {"same": loss.detach()}

    results = []
    for fn in (None, extra):
        tr = _trainer(cfg, None, extra_loss=fn)
        for m in tr.model.modules():  # dropout off: both forwards see the same network
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        logs = tr.train_step(next(iter(tr.train_data)))
        results.append((tr, logs))
    (plain, logs0), (with_extra, logs1) = results
    assert calls and calls[0][0] is with_extra.model and calls[0][1] == 0
    assert logs1["extra/same"] == pytest.approx(logs0["loss_clean"])
    assert logs1["loss"] == pytest.approx(2 * logs0["loss"], rel=1e-6)
    for p0, p1 in zip(plain.optimizer.param_groups[0]["params"],
                      with_extra.optimizer.param_groups[0]["params"]):
        m0 = plain.optimizer.state[p0]["exp_avg"]
        m1 = with_extra.optimizer.state[p1]["exp_avg"]
        torch.testing.assert_close(m1, 2 * m0, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("rmsprop", torch.optim.RMSprop)])
def test_optimizers(name, cls):
    cfg = TrainConfig().replace({"optim.name": name, "optim.lr": 3e-4})
    opt = build_optimizer(ToyRecon().parameters(), cfg)
    assert type(opt) is cls and opt.param_groups[0]["lr"] == pytest.approx(3e-4)


@pytest.mark.parametrize("sched, expected", [
    ({"sched.name": "step", "sched.step_size": 2, "sched.gamma": 0.5}, 1e-2 * 0.5 ** 3),
    ({"sched.name": "cosine", "sched.min_lr": 1e-4}, 1e-4),
    ({"sched.name": "none"}, 1e-2),
])
def test_lr_schedules(sched, expected):
    cfg = _cfg(steps=6, val_every=100).replace({"optim.lr": 1e-2, **sched})
    tr = Trainer(ToyRecon(), cfg, make_loader(ToySlices(), 2, collate_fn=collate), None)
    tr.fit()
    assert tr.step == 6
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-6)


def test_amp_is_off_on_cpu():
    assert amp_dtype("bf16", torch.device("cpu")) is None
    assert amp_dtype("none", torch.device("cuda")) is None
    assert amp_dtype("fp16", torch.device("cuda")) is torch.float16
    with pytest.warns(UserWarning, match="CUDA only"):
        Trainer(ToyRecon(), _cfg(amp="bf16"), [], None)


def test_empty_training_data_is_an_error():
    tr = Trainer(ToyRecon(), _cfg(), make_loader(ToySlices(volumes=0), 2, collate_fn=collate), None)
    with pytest.raises(ValueError, match="no batch"):
        tr.fit()


def test_resume_refuses_another_model_and_leaves_files(tmp_path):
    cfg = _cfg(steps=2, val_every=2, panels=0)
    _trainer(cfg, tmp_path).fit()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")}
    other = _trainer(cfg, tmp_path)
    other.model_config = {"chans": 8}
    with pytest.raises(ckpt.CheckpointError, match="chans: checkpoint 4 vs requested 8"):
        other.resume(tmp_path / "last.pt")
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")} == before


@pytest.mark.cuda
def test_one_step_with_amp_on_cuda(device):
    if device.type != "cuda":
        pytest.skip("AMP runs on CUDA only")
    cfg = _cfg(device=str(device), amp="auto", steps=2, val_every=2)
    tr = _trainer(cfg, None)
    out = tr.fit()
    assert tr.amp is not None and math.isfinite(out["psnr"])


def test_ema_weights_are_validated_exported_and_resumed(tmp_path, monkeypatch):
    """ema_decay: the EMA of the trained weights after every step (the first update copies
    them), validated and saved as ``model``; the trained weights resume from ``train_model``."""
    decay = 0.6
    cfg = _cfg(panels=0, steps=6, val_every=3, ema_decay=decay)
    full = _trainer(cfg, tmp_path / "full")
    trained = []
    real_step = Trainer.train_step

    def recording_step(self, batch):
        logs = real_step(self, batch)
        trained.append(_weights(self.model))
        return logs
    monkeypatch.setattr(Trainer, "train_step", recording_step)
    full.fit()
    monkeypatch.undo()
    assert len(trained) == 6
    expected = {k: v.clone() for k, v in trained[0].items()}
    for w in trained[1:]:
        for k in expected:
            if expected[k].is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * w[k]
            else:
                expected[k] = w[k].clone()
    saved = ckpt.load_checkpoint(tmp_path / "full" / "last.pt")
    for k, v in expected.items():
        torch.testing.assert_close(saved["model"][k], v, rtol=1e-6, atol=1e-7, msg=k)
        assert torch.equal(saved["train_model"][k], trained[-1][k]), k
    assert saved["ema_updates"] == 6
    assert any(not torch.equal(saved["model"][k], saved["train_model"][k]) for k in expected)
    # validation ran on the EMA weights
    from fastfn.train.evaluate import evaluate
    assert full.last_val["ssim"] == pytest.approx(evaluate(full.ema.module, full.val_data, full.device).mean["ssim"])
    assert full.last_val["ssim"] != pytest.approx(evaluate(full.model, full.val_data, full.device).mean["ssim"], abs=1e-9)
    # killed after step 4 (checkpoint at 3), resumed in a fresh process: the same EMA and weights
    killed = _trainer(cfg, tmp_path / "killed")
    killed.fit(until=4)
    resumed = _trainer(cfg, tmp_path / "killed", seed=123)
    resumed.resume(tmp_path / "killed" / "last.pt")
    resumed.fit()
    for k in expected:
        assert torch.equal(_weights(resumed.model)[k], _weights(full.model)[k]), k
        assert torch.equal(_weights(resumed.ema.module)[k], _weights(full.ema.module)[k]), k
    with pytest.raises(ValueError, match="ema_decay"):
        _cfg(ema_decay=1.0)
