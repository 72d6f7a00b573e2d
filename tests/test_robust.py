"""Robust (FNAF) training: config, loss terms, determinism per step, and the trainer hook."""
from __future__ import annotations

import math

import pytest
import torch

import fastfn.train.robust as robust_module
from fastfn.attack import AttackConfig, FeatureConfig, run_attack
from fastfn.models import build_model
from fastfn.ops import fft2c
from fastfn.train.robust import RobustConfig, default_attack, feature_loss, make_robust_loss, step_generator


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def make_batch(B: int = 2, n: int = 32, seed: int = 0, device="cpu") -> dict:
    """Smooth blob images with fully-sampled k-space and a 2x column mask."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    imgs = []
    for _ in range(B):
        c = torch.rand(2, generator=g) * 0.4 - 0.2
        imgs.append(torch.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / 0.3)
                    + 0.2 * torch.rand(n, n, generator=g))
    target = torch.stack(imgs)
    k = fft2c(target.to(torch.complex64))
    mask = torch.zeros(B, 1, n)
    mask[..., ::2] = 1
    mask[..., n // 2 - 2:n // 2 + 2] = 1
    mk = k * mask
    return {k_: v.to(device) if torch.is_tensor(v) else v for k_, v in {
        "kspace": k, "masked_kspace": mk, "mask": mask, "target": target,
        "zero_filled": torch.fft.ifft2(mk).abs(), "max": target.amax(dim=(-2, -1)),
        "fname": [f"v{i}.h5" for i in range(B)], "slice": torch.arange(B)}.items()}


def tiny_unet():
    torch.manual_seed(0)
    return build_model("unet", chans=4, num_pool_layers=1)


def test_config_validation_names_the_key():
    with pytest.raises(ValueError, match="method"):
        RobustConfig(attack=default_attack(method="fgsm"))
    with pytest.raises(ValueError, match="FeatureConfig.size"):
        RobustConfig(attack=default_attack(size=(10, 5)))
    with pytest.raises(ValueError, match="robust.beta"):
        RobustConfig(beta=-1)
    with pytest.raises(ValueError, match="robust.feature_loss"):
        RobustConfig(feature_loss="l2")
    with pytest.raises(KeyError, match="betta"):
        RobustConfig.from_dict({"betta": 1.0})
    with pytest.raises(KeyError, match="attack.pgd_stepz"):
        RobustConfig.from_dict({"attack": {"pgd_stepz": 3}})
    cfg = RobustConfig.from_dict({"attack": {"method": "pgd", "features": {"size": [3, 7]}}})
    assert cfg.attack.features.size == (3, 7) and RobustConfig.from_dict(cfg.to_dict()) == cfg
    # keys a mapping leaves out are robust training's defaults, not the evaluation attack's
    assert cfg.attack == default_attack(method="pgd", size=(3, 7))


def test_old_flat_layout_migrates_to_the_composed_config():
    old = {"attack": "pgd", "beta": 0.1, "family": "ellipse", "size": [5, 15], "intensity": [0.1, 0.9],
           "restarts": 2, "pgd_steps": 2, "pgd_step_size": 0.2, "curriculum_steps": 0, "start_step": 3,
           "feature_loss": "l1", "feature_weight": 1.0, "image_weight": 1.0, "ring": 2, "seed": 12345}
    cfg = RobustConfig.from_dict(old)
    assert cfg == RobustConfig(
        attack=default_attack(method="pgd", family="ellipse", size=(5, 15), intensity=(0.1, 0.9), ring=2,
                              random_restarts=2, pgd_restarts=2, pgd_steps=2, pgd_step_size=0.2, seed=12345),
        beta=0.1, start_step=3)
    assert RobustConfig.from_dict({"attack": "random"}) == RobustConfig()


def test_curriculum_ramps_the_largest_size():
    cfg = RobustConfig(attack=default_attack(size=(10, 90)), curriculum_steps=100)
    assert cfg.size_at(0) == (10, 10)
    assert cfg.size_at(50) == (10, 50)
    assert cfg.size_at(100) == cfg.size_at(1000) == (10, 90)
    assert cfg.attack_at(50).features.size == (10, 50) and cfg.attack_at(50).pgd_steps == cfg.attack.pgd_steps
    assert RobustConfig(attack=default_attack(size=(10, 90))).size_at(0) == (10, 90)


def test_feature_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(2, 8, 8, generator=g), torch.rand(2, 8, 8, generator=g)
    region = (torch.rand(2, 8, 8, generator=g) > 0.7).float()
    cfg = RobustConfig(feature_weight=2.0, image_weight=0.5)
    loss, logs = feature_loss(pred, target, region, cfg)
    masked = [sum(abs(float(pred[b, i, j] - target[b, i, j])) for i in range(8) for j in range(8)
                  if region[b, i, j]) / float(region[b].sum()) for b in range(2)]
    full = sum(abs(float(p - t)) for p, t in zip(pred.flatten(), target.flatten())) / pred.numel()
    assert logs["feat_loss"] == pytest.approx(sum(masked) / 2, rel=1e-5)
    assert float(loss) == pytest.approx(2.0 * sum(masked) / 2 + 0.5 * full, rel=1e-5)
    nm, _ = feature_loss(pred, target, region, RobustConfig(feature_loss="nmse", image_weight=0))
    ref = [float(((region[b] * (target[b] - pred[b])) ** 2).sum() / ((region[b] * target[b]) ** 2).sum())
           for b in range(2)]
    assert float(nm) == pytest.approx(sum(ref) / 2, rel=1e-5)


@pytest.mark.parametrize("attack", ["random", "pgd"])
def test_robust_loss_is_differentiable_and_deterministic_per_step(attack):
    model, batch = tiny_unet(), make_batch()
    cfg = RobustConfig(attack=default_attack(method=attack, size=(3, 6), random_restarts=2, pgd_restarts=2,
                                             pgd_steps=2), beta=0.5)
    fn = make_robust_loss(cfg)
    loss, logs = fn(model, batch, 3)
    assert loss.dim() == 0 and loss.requires_grad and math.isfinite(float(loss.detach()))
    assert set(logs) >= {"feat_loss", "image_loss", "adv_nmse", "robust_s"}
    assert float(loss.detach()) == pytest.approx(0.5 * (logs["feat_loss"] + logs["image_loss"]),
                                                 rel=1e-5)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert any(float(g.abs().sum()) > 0 for g in grads)
    # a resumed run at the same step draws the same features; other steps/ranks others
    again, _ = fn(model, batch, 3)
    assert float(again.detach()) == float(loss.detach())
    other, _ = fn(model, batch, 4)
    rank1, _ = make_robust_loss(cfg, rank=1)(model, batch, 3)
    assert float(other.detach()) != float(loss.detach()) != float(rank1.detach())


def test_start_step_trains_clean_before_it_and_robust_from_it(monkeypatch):
    calls = []

    def counting_attack(*args, **kwargs):
        calls.append(1)
        return run_attack(*args, **kwargs)
    monkeypatch.setattr(robust_module, "run_attack", counting_attack)
    model, batch = tiny_unet(), make_batch()
    cfg = RobustConfig(attack=default_attack(size=(3, 6)), beta=0.5, start_step=5)
    fn = make_robust_loss(cfg)
    loss, logs = fn(model, batch, 4)
    assert float(loss) == 0.0 and not calls                         # no search before start_step
    on, on_logs = fn(model, batch, 5)
    assert len(calls) == 1 and float(on.detach()) > 0 and on.requires_grad
    assert set(logs) == set(on_logs)                                # CSV columns stay the same
    ref, _ = make_robust_loss(RobustConfig(attack=default_attack(size=(3, 6)), beta=0.5))(model, batch, 5)
    assert float(on.detach()) == float(ref.detach())                # from start_step: the plain term
    with pytest.raises(ValueError, match="robust.start_step"):
        RobustConfig(start_step=-1)


def test_pgd_search_finds_worse_features_than_its_random_starts():
    model, batch = tiny_unet(), make_batch(B=4)
    cfg = AttackConfig(features=FeatureConfig(size=(4, 8)), random_restarts=3, pgd_restarts=3, pgd_steps=3)
    r0 = run_attack(model, batch, cfg, step_generator(0, 0, 0, torch.device("cpu")))
    r1 = run_attack(model, batch, cfg.replace(method="pgd"), step_generator(0, 0, 0, torch.device("cpu")))
    assert float(r1["worst_nmse"].mean()) >= float(r0["worst_nmse"].mean())


def test_step_generator_depends_only_on_seed_step_rank():
    a = torch.rand(3, generator=step_generator(1, 5, 0, torch.device("cpu")))
    b = torch.rand(3, generator=step_generator(1, 5, 0, torch.device("cpu")))
    c = torch.rand(3, generator=step_generator(1, 6, 0, torch.device("cpu")))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_trainer_runs_robust_training_and_resumes_identically(tmp_path):
    from fastfn.train.config import TrainConfig
    from fastfn.train.trainer import Trainer
    batches = [make_batch(seed=s) for s in range(2)]
    cfg = TrainConfig(model="unet", model_config={"chans": 4, "num_pool_layers": 1}, steps=4,
                      val_every=2, ckpt_every=2, progress=False, tensorboard=False, panels=0)
    rcfg = RobustConfig(attack=default_attack(method="pgd", size=(3, 6), pgd_restarts=2, pgd_steps=1))

    def run(out, until=None, resume=None):
        model = tiny_unet()
        t = Trainer(model, cfg, batches, None, out_dir=out,
                    extra_loss=make_robust_loss(rcfg))
        if resume is not None:
            t.resume(resume)
        t.fit(until)
        t.close()
        return model

    full = run(tmp_path / "a")
    run(tmp_path / "b", until=2)
    resumed = run(tmp_path / "b", resume=tmp_path / "b" / "last.pt")
    for p, q in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)
    assert any((p - q).abs().sum() > 0 for p, q in zip(full.parameters(), tiny_unet().parameters()))


def test_beta_ramp_grows_linearly_from_the_start_step():
    cfg = RobustConfig(beta=0.4, start_step=10, beta_ramp_steps=4)
    assert [cfg.beta_at(s) for s in (9, 10, 11, 12, 13, 50)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])
    plain = RobustConfig(beta=0.4, start_step=10)
    assert [plain.beta_at(s) for s in (9, 10, 50)] == [0.0, 0.4, 0.4]
    with pytest.raises(ValueError, match="robust.beta_ramp_steps"):
        RobustConfig(beta_ramp_steps=-1)
    # the term of a ramped step is the plain term (same features) times the ramp's fraction
    model, batch = tiny_unet(), make_batch()
    attack = default_attack(size=(3, 6))
    ramped = make_robust_loss(RobustConfig(attack=attack, beta=0.4, start_step=2, beta_ramp_steps=4))
    full = make_robust_loss(RobustConfig(attack=attack, beta=0.4, start_step=2))
    for step, fraction in ((2, 0.25), (4, 0.75), (5, 1.0), (9, 1.0)):
        r, logs = ramped(model, batch, step)
        f, _ = full(model, batch, step)
        assert float(r.detach()) == pytest.approx(fraction * float(f.detach()), rel=1e-6)
        assert logs["beta"] == pytest.approx(0.4 * fraction)
    off, off_logs = ramped(model, batch, 1)
    assert float(off) == 0.0 and set(off_logs) == set(logs)          # CSV columns stay the same


def test_default_settings_keep_the_log_columns_and_value():
    model, batch = tiny_unet(), make_batch()
    cfg = RobustConfig(attack=default_attack(size=(3, 6)), beta=0.3)
    loss, logs = make_robust_loss(cfg)(model, batch, 2)
    assert set(logs) == {"feat_loss", "image_loss", "adv_nmse", "robust_s"}
    g = step_generator(cfg.attack.seed, 2, 0, torch.device("cpu"))
    adv = robust_module.adversarial_examples(model, batch, cfg, 2, g)
    pred = model(adv["masked_kspace"], batch["mask"], tuple(batch["target"].shape[-2:]))
    raw, _ = feature_loss(pred, adv["target"], adv["region"], cfg)
    assert torch.equal(loss.detach(), (0.3 * raw).detach())          # bit for bit: beta * raw


def test_normalize_ties_the_term_to_the_clean_l1():
    model, batch = tiny_unet(), make_batch()
    attack = default_attack(size=(3, 6))
    norm = RobustConfig(attack=attack, beta=0.5, normalize_to_clean=True)
    loss, logs = make_robust_loss(norm)(model, batch, 3)
    with torch.no_grad():
        clean = model(batch["masked_kspace"], batch["mask"], tuple(batch["target"].shape[-2:]))
    clean_l1 = float((clean - batch["target"]).abs().mean())
    assert float(loss.detach()) == pytest.approx(0.5 * clean_l1, rel=1e-5)
    assert logs["clean_l1"] == pytest.approx(clean_l1, rel=1e-5)
    # the gradient is the raw term's (same step, same features), scaled by beta * c / a
    raw, raw_logs = make_robust_loss(RobustConfig(attack=attack, beta=1.0))(model, batch, 3)
    a = raw_logs["feat_loss"] + raw_logs["image_loss"]
    assert logs["scale"] == pytest.approx(clean_l1 / a, rel=1e-5)
    params = list(model.parameters())
    g_norm = torch.autograd.grad(loss, params)
    g_raw = torch.autograd.grad(raw, params)
    for gn, gr in zip(g_norm, g_raw):
        torch.testing.assert_close(gn, gr * (0.5 * clean_l1 / a), rtol=1e-4, atol=1e-7)
    # the same value whatever the images' intensity scale (beta is relative to the clean loss)
    scaled = {**batch, **{k: batch[k] * 10 for k in ("kspace", "masked_kspace", "target", "max")}}
    s_loss, s_logs = make_robust_loss(norm)(model, scaled, 3)
    assert float(s_loss.detach()) == pytest.approx(0.5 * s_logs["clean_l1"], rel=1e-5)


def test_local_intensity_features_in_robust_training_follow_the_tissue():
    """intensity_mode="local": each chosen feature's intensities are fractions of the mean
    target under its own support, in bright and in dark tissue alike."""
    model, batch = tiny_unet(), make_batch(B=4)
    cfg = RobustConfig(attack=default_attack(method="pgd", size=(3, 6), intensity_mode="local",
                                             intensity=(0.1, 0.3), pgd_steps=2), beta=0.2)
    g = step_generator(cfg.attack.seed, 0, 0, torch.device("cpu"))
    adv = robust_module.adversarial_examples(model, batch, cfg, 0, g)
    target = batch["target"]
    for b in range(4):
        idx, val = adv["index"][b], adv["values"][b]
        px = idx[idx >= 0]
        local = float(target[b].flatten()[px].mean())
        v = val[idx >= 0]
        assert float(v.min()) >= 0.1 * local - 1e-5 and float(v.max()) <= 0.3 * local + 1e-5
        added = (adv["target"][b] - target[b]).flatten()
        torch.testing.assert_close(added[px], v)
    loss, _ = make_robust_loss(cfg)(model, batch, 0)
    assert loss.requires_grad and float(loss.detach()) > 0


def _flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


def test_combine_gradients_projects_only_conflicts_and_caps_the_ratio():
    g = torch.Generator().manual_seed(3)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    clean = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    # an adversarial gradient against the clean one: -0.7 g_c plus a part orthogonal to it
    noise = _flat([torch.randn(s, generator=g, dtype=torch.float64) for s in shapes])
    c = _flat(clean)
    orth = noise - (noise @ c) / (c @ c) * c
    a = -0.7 * c + orth
    extra = list(a.split([math.prod(s) for s in shapes]))
    extra = [e.view(s) for e, s in zip(extra, shapes)]
    out, logs = robust_module.combine_gradients(clean, extra, project=True, ratio=0.0)
    torch.testing.assert_close(_flat(out), c + orth)              # the conflicting part is gone
    assert logs["projected"] == 1.0 and logs["capped"] == 0.0
    assert logs["grad_cos"] == pytest.approx(float(a @ c / (a.norm() * c.norm())))
    assert logs["grad_ratio"] == pytest.approx(float(a.norm() / c.norm()))
    # an agreeing gradient is left as it is
    agree = [e.neg() for e in extra]                              # 0.7 g_c - orth
    out, logs = robust_module.combine_gradients(clean, agree, project=True, ratio=0.0)
    torch.testing.assert_close(_flat(out), c + 0.7 * c - orth)
    assert logs["projected"] == 0.0
    # without projection, the cap scales g_a to ratio * |g_c|
    out, logs = robust_module.combine_gradients(clean, extra, project=False, ratio=0.25)
    torch.testing.assert_close(_flat(out), c + a * (0.25 * c.norm() / a.norm()))
    assert logs["capped"] == 1.0 and logs["projected"] == 0.0
    # both: projected first, then the projected part capped
    out, _ = robust_module.combine_gradients(clean, extra, project=True, ratio=0.25)
    torch.testing.assert_close(_flat(out), c + orth * (0.25 * c.norm() / orth.norm()))
    # no adversarial gradient (a clean step): the clean gradient, zero logs; None stays None
    out, logs = robust_module.combine_gradients(clean + [None], [None] * 4, project=True, ratio=0.25)
    assert all(torch.equal(o, cl) for o, cl in zip(out, clean)) and out[3] is None
    assert logs == {"grad_cos": 0.0, "grad_ratio": 0.0, "projected": 0.0, "capped": 0.0}
    with pytest.raises(ValueError, match="robust.gradient_ratio"):
        RobustConfig(gradient_ratio=-1.0)


@pytest.mark.parametrize("project,ratio", [(True, 0.0), (False, 0.05), (True, 0.05)])
def test_trainer_steps_with_the_combined_gradient(project, ratio):
    """The trainer's gradient under gradient_projection / gradient_ratio is the combination
    of the separately computed clean and adversarial gradients, not their sum."""
    from fastfn.losses import build_loss
    from fastfn.train.config import TrainConfig
    from fastfn.train.trainer import Trainer
    batch = make_batch(B=2, seed=4)
    cfg = TrainConfig(model="unet", model_config={"chans": 4, "num_pool_layers": 1}, steps=1,
                      val_every=1, ckpt_every=1, progress=False, tensorboard=False, panels=0)
    rcfg = RobustConfig(attack=default_attack(size=(3, 6)), beta=2.0, gradient_projection=project,
                        gradient_ratio=ratio)
    extra_loss = make_robust_loss(rcfg)
    assert hasattr(extra_loss, "combine_gradients")
    assert not hasattr(make_robust_loss(RobustConfig(beta=2.0)), "combine_gradients")
    model = tiny_unet().train()
    params = list(model.parameters())
    pred = model(batch["masked_kspace"], batch["mask"], tuple(batch["target"].shape[-2:]))
    g_c = torch.autograd.grad(build_loss("l1")(pred, batch["target"], batch["max"]), params)
    adv, _ = extra_loss(model, batch, 0)
    g_a = torch.autograd.grad(adv, params)
    c, a = _flat(g_c), _flat(g_a)
    expected = a
    if project and float(a @ c) < 0:
        expected = a - (a @ c) / (c @ c) * c
    if ratio > 0 and float(expected.norm()) > ratio * float(c.norm()):
        expected = expected * (ratio * c.norm() / expected.norm())
    trainer = Trainer(model, cfg, [batch], None, extra_loss=extra_loss)
    trainer.optimizer.step = lambda *a, **k: None                 # keep the weights; read .grad
    logs = trainer.train_step(batch)
    torch.testing.assert_close(_flat([p.grad for p in params]), c + expected, rtol=1e-5, atol=1e-7)
    assert logs["extra/grad_ratio"] == pytest.approx(float(a.norm() / c.norm()), rel=1e-5)
    assert logs["extra/projected"] == float(project and float(a @ c) < 0)
    assert logs["extra/capped"] == float(ratio > 0)
    # a clean step of such a run (before start_step) keeps the log columns
    late = make_robust_loss(RobustConfig(attack=default_attack(size=(3, 6)), start_step=5,
                                         gradient_projection=True))
    t2 = Trainer(tiny_unet(), cfg, [batch], None, extra_loss=late)
    clean_logs = t2.train_step(batch)
    assert {k for k in logs if k.startswith("extra/")} == {k for k in clean_logs if k.startswith("extra/")}
    assert clean_logs["extra/grad_cos"] == 0.0
