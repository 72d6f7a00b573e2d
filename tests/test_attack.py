"""fastfn.attack: features, acquisition, random search / PGD / refinement, flags, report, CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

import fastfn.reference as ref
from fastfn.attack import (AttackConfig, FeatureConfig, apply_feature, attack_dataset, draw_supports, from_batch,
                           placement_region, run_attack)
from fastfn.attack import engine
from fastfn.attack.report import clopper_pearson_interval, summarize, wilson_interval, write_report
from fastfn.models import wrap

H, W, h, w = 40, 36, 32, 32  # full k-space grid larger than the crop: exercises the offsets


def make_batch(B: int = 3, coils: int | None = None, device="cpu", seed: int = 0, full_mask: bool = False,
               with_sens: bool = False) -> dict:
    """Synthetic batch of the architecture contract: an ellipse of tissue with a smooth phase."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    mag = ((yy / 0.7) ** 2 + (xx / 0.6) ** 2 < 1).float() * (0.6 + 0.4 * torch.rand(B, H, W, generator=g))
    phase = torch.exp(1j * (0.8 * xx + 0.5 * yy + torch.rand(B, 1, 1, generator=g)))
    img = (mag * phase).to(torch.complex64)
    mask = (torch.rand(B, 1, W, generator=g) < 0.3).float()
    mask[..., W // 2 - 3:W // 2 + 3] = 1
    if full_mask:
        mask = torch.ones(B, 1, W)
    batch = {"mask": mask, "fname": [f"vol{i}" for i in range(B)], "slice": torch.arange(B)}
    if coils is None:
        k = ref.fft2c(img)
        target = img.abs()
        batch["masked_kspace"] = k * mask
    else:
        cy = torch.linspace(-1, 1, coils).view(coils, 1, 1)
        sens = torch.exp(-((yy - cy) ** 2)) * torch.exp(1j * cy * xx)
        sens = (sens / sens.abs().pow(2).sum(0).sqrt()).to(torch.complex64)
        coil_img = sens * img.unsqueeze(1)
        k = ref.fft2c(coil_img)
        target = coil_img.abs().pow(2).sum(1).sqrt()
        batch["masked_kspace"] = k * mask.unsqueeze(1)
        if with_sens:
            batch["sens"] = sens.expand(B, -1, -1, -1).clone()
    top, left = (H - h) // 2, (W - w) // 2
    batch.update(kspace=k, target=target[:, top:top + h, left:left + w].contiguous(), max=target.amax((-2, -1)))
    return {key: v.to(device) if isinstance(v, torch.Tensor) else v for key, v in batch.items()}


def tiny_model(multicoil: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, 1, 3, padding=1))
    return wrap(net, input="magnitude", multicoil=multicoil).eval()


def reference_masked_nmse(model, batch, index, values, ring=1):
    """Independent pipeline for (N, P) features: dense reference insertion, the
    authors'-style acquisition written out with torch.fft, model, masked NMSE formula."""
    t = batch["target"]
    pert, reg = ref.insert_features(t, index[:, None], values[:, None], ring)
    pert, reg = pert[:, 0], reg[:, 0]
    x = ref.ifft2c(batch["kspace"])
    d = torch.zeros(x.shape[0], H, W)
    top, left = (H - h) // 2, (W - w) // 2
    d[:, top:top + h, left:left + w] = pert - t
    if x.dim() == 3:
        phase = torch.where(x.abs() > 1e-4 * x.abs().amax((1, 2), keepdim=True), torch.sgn(x), torch.ones_like(x))
        k = ref.fft2c(x + d * phase) * batch["mask"]
    else:
        rss = x.abs().pow(2).sum(1, keepdim=True).sqrt()
        sens = x / rss.clamp_min(1e-30)
        background = rss <= 1e-4 * rss.amax((1, 2, 3), keepdim=True)
        sens = torch.where(background, torch.full_like(sens, x.shape[1] ** -0.5), sens)
        k = ref.fft2c(x + sens * d.unsqueeze(1)) * batch["mask"].unsqueeze(1)
    pred = model(k, batch["mask"], (h, w))
    return ((reg * (pert - pred)) ** 2).sum((-2, -1)) / ((reg * pert) ** 2).sum((-2, -1)), pert, reg, k


# ---- features ---------------------------------------------------------------------------------

def test_random_walk_is_4_connected_inside_region():
    t = make_batch(4)["target"]
    cfg = FeatureConfig(family="random_walk", size=(10, 10), margin=4)
    g = torch.Generator().manual_seed(3)
    index, profile = draw_supports(t, cfg, 6, g)
    assert index.shape == (4, 6, 11) and torch.equal(profile, (index >= 0).float())
    region = placement_region(t, cfg)
    for n in range(4):
        for r in range(6):
            px = index[n, r][index[n, r] >= 0]
            assert 2 <= px.numel() <= 11 and px.unique().numel() == px.numel()
            m = np.zeros((h, w), bool)
            m[(px // w).numpy(), (px % w).numpy()] = True
            assert ndimage.label(m)[1] == 1  # default structure: 4-connectivity
            # the walk's 10 steps keep it within L1 distance 10 of a start in the region
            near = ndimage.distance_transform_cdt(~region[n].numpy(), metric="taxicab")
            assert near[m].min() <= 10


def test_draws_reproducible_and_families_valid():
    t = make_batch(2)["target"]
    for fam, size in (("random_walk", (5, 12)), ("ellipse", (1.5, 3)), ("line", (4, 8)), ("gaussian", (1, 3))):
        cfg = FeatureConfig(family=fam, size=size)
        a = draw_supports(t, cfg, 5, torch.Generator().manual_seed(1))
        b = draw_supports(t, cfg, 5, torch.Generator().manual_seed(1))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        idx = a[0]
        assert idx.shape[-1] == cfg.max_pixels
        assert ((idx >= -1) & (idx < h * w)).all() and (idx >= 0).any(-1).all()
        assert ((a[1] > 0) == (idx >= 0)).all() and (a[1] <= 1).all()


def test_disk_area_and_line_extent():
    t = torch.ones(1, 64, 64)
    disk = FeatureConfig(family="ellipse", size=(4, 4), margin=10)
    idx, _ = draw_supports(t, disk, 8, torch.Generator().manual_seed(0))
    area = (idx >= 0).sum(-1).float()
    assert ((area - math.pi * 16).abs() < 8).all()  # lattice points of a radius-4 disk: 49
    line = FeatureConfig(family="line", size=(9, 9), line_width=1, margin=10)
    idx, _ = draw_supports(t, line, 8, torch.Generator().manual_seed(0))
    for f in idx[0]:
        px = f[f >= 0]
        r, c = (px // 64).float(), (px % 64).float()
        extent = torch.sqrt((r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2).max()
        assert 7 <= extent <= 10.5 and px.numel() <= 3 * 10
        m = np.zeros((64, 64), bool)
        m[r.long().numpy(), c.long().numpy()] = True
        assert ndimage.label(m, structure=np.ones((3, 3)))[1] == 1  # no gaps


def test_placement_box_and_anatomy():
    t = make_batch(1)["target"]
    box = placement_region(torch.zeros(1, 320, 320), FeatureConfig(placement="box"))
    assert box[0, 50:270, 50:270].all() and box.sum() == 220 * 220
    anat = placement_region(t, FeatureConfig(margin=3))
    assert not anat[0, :3].any() and not anat[0, :, -3:].any()
    assert (t[anat] > 0).all()  # inside the tissue
    assert anat.sum() > 0.3 * (t > 0).sum()


# ---- acquisition ------------------------------------------------------------------------------

@pytest.mark.parametrize("coils,with_sens", [(None, False), (4, False), (4, True)])
def test_acquisition_gives_target_plus_feature(coils, with_sens):
    # fully sampled: the model input's magnitude (RSS) image is exactly target + feature
    batch = make_batch(2, coils=coils, full_mask=True, with_sens=with_sens)
    acq = from_batch(batch)
    delta = torch.zeros(2, h, w)
    delta[0, 10, 12], delta[1, 20:23, 5] = 0.7, 0.3
    k = acq.simulate(delta)
    img = ref.ifft2c(k)
    mag = img.abs() if coils is None else img.abs().pow(2).sum(1).sqrt()
    top, left = (H - h) // 2, (W - w) // 2
    torch.testing.assert_close(mag[:, top:top + h, left:left + w], batch["target"] + delta, atol=2e-5, rtol=1e-4)
    change = acq.zero_filled_change(delta)
    torch.testing.assert_close(change, delta, atol=2e-5, rtol=1e-4)


def test_acquisition_gradient_is_finite_on_an_empty_slice():
    # an all-zero slice (outside the anatomy, zero padding) in a multi-coil batch: the
    # RSS magnitude change must still have a finite gradient, and the other slice's
    # gradient must not depend on it
    def grad_of_change(batch):
        delta = torch.zeros(2, h, w, requires_grad=True)  # a search's starting point
        from_batch(batch).zero_filled_change(delta).sum().backward()
        return delta.grad

    batch = make_batch(2, coils=4, full_mask=True, with_sens=True)
    reference = grad_of_change(batch)
    for key in ("kspace", "masked_kspace", "target"):
        batch[key][1] = 0
    grad = grad_of_change(batch)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad[0], reference[0])


def test_acquisition_is_linear_in_the_feature():
    batch = make_batch(2)
    acq = from_batch(batch)
    d1, d2 = torch.rand(2, h, w), torch.rand(2, h, w)
    k0 = acq.simulate(torch.zeros(2, h, w))
    torch.testing.assert_close(k0, batch["masked_kspace"])
    lhs = acq.simulate(d1 + 2 * d2) - k0
    rhs = (acq.simulate(d1) - k0) + 2 * (acq.simulate(d2) - k0)
    torch.testing.assert_close(lhs, rhs, atol=1e-5, rtol=1e-4)


# ---- engine -----------------------------------------------------------------------------------

@pytest.mark.parametrize("coils", [None, 3])
def test_random_search_matches_reference_pipeline(coils):
    batch = make_batch(3, coils=coils)
    model = tiny_model(multicoil=coils is not None)
    cfg = AttackConfig(features=FeatureConfig(margin=3), random_restarts=5, chunk=4)
    out = run_attack(model, batch, cfg, torch.Generator().manual_seed(0))
    # the same draws, scored one candidate at a time with the reference pipeline
    t = batch["target"]
    cands = engine.draw(t, cfg, 5, torch.Generator().manual_seed(0), placement_region(t, cfg.features))
    with torch.no_grad():
        scores = torch.stack([reference_masked_nmse(model, batch, cands.index[:, r], cands.values[:, r])[0]
                              for r in range(5)], 1)
    torch.testing.assert_close(out["worst_nmse"], scores.max(1).values, rtol=1e-4, atol=1e-7)
    assert torch.equal(out["index"], cands.index[torch.arange(3), scores.argmax(1)])
    assert int(out["model_evals"]) == 15
    exp_nmse, pert, reg, k = reference_masked_nmse(model, batch, out["index"], out["values"])
    torch.testing.assert_close(out["target"], pert)
    torch.testing.assert_close(out["region"], reg)
    torch.testing.assert_close(out["masked_kspace"], k, atol=1e-5, rtol=1e-4)


def test_pgd_improves_on_its_random_starts():
    batch = make_batch(3)
    model = tiny_model()
    cfg = AttackConfig(features=FeatureConfig(margin=3), pgd_restarts=4, pgd_steps=6, pgd_step_size=0.3)
    t = batch["target"]
    region = placement_region(t, cfg.features)
    score = engine.Scorer(model, from_batch(batch))
    start = engine.random_search(score, t, cfg, 4, torch.Generator().manual_seed(5), region)
    score = engine.Scorer(model, from_batch(batch))
    after = engine.pgd(score, t, cfg, 4, 6, torch.Generator().manual_seed(5), region)
    assert torch.equal(after.index, start.index)  # same supports
    assert (after.nmse >= start.nmse - 1e-6).all()
    assert after.nmse.mean() > 1.2 * start.nmse.mean()
    assert score.evals == 3 * 4 * 7
    # the reported intensities really score what is reported, and stay in bounds
    valid = after.index >= 0
    assert (after.values[valid] >= after.lo[..., None].expand_as(valid)[valid] - 1e-6).all()
    assert (after.values[valid] <= after.hi[..., None].expand_as(valid)[valid] + 1e-6).all()
    best = after.best()
    with torch.no_grad():
        exp = reference_masked_nmse(model, batch, best.index[:, 0], best.values[:, 0])[0]
    torch.testing.assert_close(best.nmse[:, 0], exp, rtol=1e-4, atol=1e-7)


def test_pgd_builds_each_chunks_column_plan_once_not_per_step():
    """Through a cascade with DC layers, a PGD run of T steps builds one column plan per
    chunk of candidates whatever T is: the chunk's mask is made once per batch, so on a
    GPU no step copies a mask to the host (tests/test_ops_host_sync.py runs it there
    under the sync debug mode)."""
    import fastfn.ops.masked_fft as masked_fft_ops
    from fastfn.models.cascade import CascadeNet

    batch = make_batch(3)
    torch.manual_seed(0)
    model = CascadeNet(num_cascades=3, chans=4, num_convs=2).eval()
    cfg = AttackConfig(features=FeatureConfig(margin=3), pgd_restarts=4, chunk=5)
    t = batch["target"]
    region = placement_region(t, cfg.features)
    built = []
    for steps in (1, 4):
        masked_fft_ops.reset_column_plan_cache()
        engine.pgd(engine.Scorer(model, from_batch(batch), cfg.chunk), t, cfg, 4, steps,
                   torch.Generator().manual_seed(5), region)
        built.append(masked_fft_ops.column_plan_counters()["built"])
    assert built == [math.ceil(3 * 4 / 5)] * 2, built


def test_pgd_screen_starts_from_the_worst_random_draws():
    batch = make_batch(3)
    model = tiny_model()
    cfg = AttackConfig(features=FeatureConfig(margin=3), pgd_restarts=2, pgd_steps=3, pgd_screen=4, pgd_step_size=0.3)
    t = batch["target"]
    region = placement_region(t, cfg.features)
    pool = engine.random_search(engine.Scorer(model, from_batch(batch)), t, cfg, 8,
                                torch.Generator().manual_seed(7), region)
    top = pool.top(2)
    ranked = pool.nmse.sort(dim=1, descending=True).values[:, :2]
    torch.testing.assert_close(top.nmse, ranked)
    for n in range(3):   # top() carries each candidate's own support and intensities
        for r in range(2):
            j = int((pool.nmse[n] == top.nmse[n, r]).nonzero()[0])
            assert torch.equal(top.index[n, r], pool.index[n, j]) and torch.equal(top.values[n, r], pool.values[n, j])
    score = engine.Scorer(model, from_batch(batch))
    after = engine.pgd(score, t, cfg, 2, 3, torch.Generator().manual_seed(7), region)
    assert torch.equal(after.index, top.index)                  # the same draws, the two worst kept
    assert (after.nmse >= top.nmse - 1e-6).all()                # never worse than its start
    assert after.nmse.amax(1).mean() > pool.nmse.amax(1).mean()   # the steps add to the screening
    assert score.evals == 3 * (8 + 2 * 4)                        # screening + (T + 1) per start
    with pytest.raises(ValueError, match="pgd_screen"):
        AttackConfig(pgd_screen=0)


def test_refine_keeps_improvements_only():
    batch = make_batch(2)
    model = tiny_model()
    cfg = AttackConfig(features=FeatureConfig(margin=3), refine_iters=2, refine_step=1)
    t = batch["target"]
    region = placement_region(t, cfg.features)
    score = engine.Scorer(model, from_batch(batch))
    best = engine.random_search(score, t, cfg, 3, torch.Generator().manual_seed(2), region).best()
    moved = engine.refine(score, t, cfg, best, region)
    assert (moved.nmse >= best.nmse).all()
    with torch.no_grad():
        exp = reference_masked_nmse(model, batch, moved.index[:, 0], moved.values[:, 0])[0]
    torch.testing.assert_close(moved.nmse[:, 0], exp, rtol=1e-4, atol=1e-7)
    # a refined feature is a translate of the original (same pixel count, same values)
    assert torch.equal((moved.index >= 0).sum(-1), (best.index >= 0).sum(-1))


def test_flags_info_preserved_and_fn():
    batch = make_batch(3, full_mask=True)
    model = tiny_model()
    cfg = AttackConfig(features=FeatureConfig(margin=3), random_restarts=2, threshold=1e-3, info_threshold=1e-4,
                       method="pgd+refine")
    out = run_attack(model, batch, cfg, torch.Generator().manual_seed(0))
    # fully sampled: the zero-filled image changes by exactly the feature
    d = out["target"] - batch["target"]
    exp = ((d * out["region"]) ** 2).sum((-2, -1)) / out["region"].sum((-2, -1)) / batch["target"].amax((-2, -1)) ** 2
    torch.testing.assert_close(out["info_mse"], exp, rtol=1e-3, atol=1e-9)
    assert torch.equal(out["info_preserved"], exp >= 1e-4)
    assert torch.equal(out["fn"], out["info_preserved"] & (out["worst_nmse"] >= 1e-3))
    # a 1-column acquisition far from the feature keeps (almost) nothing of it
    cfg_hi = AttackConfig(features=FeatureConfig(margin=3), random_restarts=2, info_threshold=1e3)
    assert not run_attack(model, batch, cfg_hi, torch.Generator().manual_seed(0))["fn"].any()


def test_run_attack_restores_mode_and_apply_feature_reproduces_it():
    batch = make_batch(2)
    model = tiny_model().train()
    r = run_attack(model, batch, AttackConfig(features=FeatureConfig(size=(3, 6), margin=3), method="pgd",
                                              pgd_restarts=2, pgd_steps=2), torch.Generator().manual_seed(0))
    assert model.training  # mode restored
    assert r["target"].shape == (2, h, w) and r["masked_kspace"].shape == (2, H, W) and r["worst_nmse"].shape == (2,)
    s = run_attack(model, batch, AttackConfig(features=FeatureConfig(margin=3), random_restarts=3),
                   torch.Generator().manual_seed(0))
    assert s["fn"].dtype == torch.bool and s["worst_nmse"].shape == (2,)
    a = apply_feature(batch, s["index"], s["values"])
    torch.testing.assert_close(a["target"], s["target"])
    torch.testing.assert_close(a["masked_kspace"], s["masked_kspace"])
    top, left = (H - h) // 2, (W - w) // 2
    zf = ref.ifft2c(a["masked_kspace"]).abs()[:, top:top + h, left:left + w]
    torch.testing.assert_close(a["zero_filled"], zf, atol=2e-5, rtol=1e-4)


def test_bad_config_and_batch():
    with pytest.raises(ValueError, match="family"):
        AttackConfig(features=FeatureConfig(family="square"))
    with pytest.raises(ValueError, match="family"):
        AttackConfig(features={"family": "square"})
    with pytest.raises(KeyError, match="restartz"):
        AttackConfig.from_dict({"restartz": 3})
    with pytest.raises(KeyError, match="features.sise"):
        AttackConfig.from_dict({"features": {"sise": [3, 4]}})
    with pytest.raises(KeyError, match="kspace"):
        from_batch({"masked_kspace": torch.zeros(1, 4, 4, dtype=torch.complex64), "mask": torch.ones(1, 1, 4)})
    with pytest.raises(ValueError, match="method"):
        AttackConfig(method="bfgs")
    with pytest.raises(ValueError, match="FeatureConfig.size"):
        AttackConfig(features=FeatureConfig(size=(5, 3)))
    with pytest.raises(ValueError, match="FeatureConfig.intensity"):
        FeatureConfig(intensity=(0.9, 0.1))
    FeatureConfig(intensity=(0.3, 0.3))  # one fixed contrast is allowed


# ---- dataset runner, report, CLI ----------------------------------------------------------------

def test_intervals_pinned():
    # Clopper-Pearson with k = 0: upper = 1 - 0.025^(1/n); Wilson k=5, n=10 (textbook value)
    lo, hi = clopper_pearson_interval(0, 10)
    assert lo == 0 and abs(hi - (1 - 0.025 ** 0.1)) < 1e-9
    lo, hi = wilson_interval(5, 10)
    assert abs(lo - 0.2366) < 1e-4 and abs(hi - 0.7634) < 1e-4
    lo, hi = clopper_pearson_interval(5, 10)
    assert abs(lo - 0.1871) < 1e-4 and abs(hi - 0.8129) < 1e-4


def test_attack_dataset_and_report(tmp_path):
    batches = [make_batch(2, seed=s) for s in range(2)]
    model = tiny_model()
    res = attack_dataset(model, batches, AttackConfig(features=FeatureConfig(margin=3), random_restarts=3), keep_worst=2)
    recs = res["records"]
    assert len(recs) == 4 and res["summary"]["n_slices"] == 4
    assert res["summary"]["model_evals"] == 12
    s = summarize(recs, 1e-3)
    assert s["fn_rate"] == sum(r["fn"] for r in recs) / 4
    assert s["median_worst_nmse"] == pytest.approx(float(np.median([r["worst_nmse"] for r in recs])))
    paths = write_report(tmp_path, res, panels=2)
    summary = json.loads((tmp_path / "attack.json").read_text())
    for key in ("method", "n_slices", "fn_rate", "fn_rate_ci95", "info_preserved_rate", "mean_worst_nmse",
                "median_worst_nmse", "features_per_second", "model_evals"):
        assert key in summary
    lines = (tmp_path / "slices.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["feature_rows"]
    assert (tmp_path / "slices.csv").read_text().count("\n") == 5
    assert (tmp_path / "worst_00.png").stat().st_size > 1000 and "histogram" in paths
    # same seed, same results: reproducible
    again = attack_dataset(model, batches, AttackConfig(features=FeatureConfig(margin=3), random_restarts=3))
    assert [r["worst_nmse"] for r in again["records"]] == [r["worst_nmse"] for r in recs]


def test_cli_attack(tmp_path):
    from fastfn.cli import main
    from fastfn.data import write_synthetic_dataset
    from fastfn.models import build_model
    from fastfn.train.checkpoint import save_model
    write_synthetic_dataset(tmp_path / "data", volumes=1, slices=2, size=48, seed=0)
    model = build_model("unet", chans=4, num_pool_layers=2)
    save_model(model, tmp_path / "best.pt")
    rc = main(["attack", "--ckpt", str(tmp_path / "best.pt"), "--data", str(tmp_path / "data"),
               "--mask", "random:4x@0.08", "--method", "pgd", "--restarts", "2", "--steps", "2",
               "--out", str(tmp_path / "out"), "--panels", "1", "--no-progress", "--device", "cpu"])
    assert rc == 0
    summary = json.loads((tmp_path / "out" / "attack.json").read_text())
    assert summary["n_slices"] == 2 and summary["method"] == "pgd" and summary["model_evals"] == 2 * 2 * 3
    assert 0 <= summary["fn_rate_ci95"][0] <= summary["fn_rate"] <= summary["fn_rate_ci95"][1] <= 1
    rc = main(["attack", "--ckpt", str(tmp_path / "best.pt"), "--data", str(tmp_path / "data"),
               "--method", "pgd", "--restarts", "2", "--steps", "2", "--screen", "3",
               "--out", str(tmp_path / "screened"), "--panels", "0", "--no-progress", "--device", "cpu"])
    screened = json.loads((tmp_path / "screened" / "attack.json").read_text())
    assert rc == 0 and screened["model_evals"] == 2 * (3 * 2 + 2 * 3)   # screening + (T + 1) per start
    assert main(["attack", "--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o2")]) == 2


def test_pgd_through_varnet_multicoil_with_given_sens():
    # a real multi-coil model of the library: the gradient flows through its DC/sens
    # path into the features; PGD never scores below its own starting point
    from fastfn.models import build_model
    torch.manual_seed(0)
    model = build_model("varnet", num_cascades=1, chans=4, pools=1, sens_chans=2, sens_pools=1).eval()
    batch = make_batch(2, coils=3, with_sens=True)
    cfg = AttackConfig(features=FeatureConfig(margin=3), method="pgd", pgd_restarts=2, pgd_steps=2)
    out = run_attack(model, batch, cfg, torch.Generator().manual_seed(0))
    assert out["masked_kspace"].shape == batch["masked_kspace"].shape and torch.isfinite(out["worst_nmse"]).all()
    start = run_attack(model, batch, AttackConfig(features=FeatureConfig(margin=3), random_restarts=2),
                       torch.Generator().manual_seed(0))
    assert (out["worst_nmse"] >= start["worst_nmse"] - 1e-6).all()
