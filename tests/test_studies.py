"""Robustness studies: susceptibility map, contrast-detail, k-space noise; their evaluation files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import fastfn.reference as ref
from fastfn.attack import AttackConfig, FeatureConfig, run_attack
from fastfn.attack.report import wilson_interval
from fastfn.attack.studies import (NoiseConfig, ZeroFilled, cell_seed, contrast_detail_batch, contrast_detail_table,
                                   grid_locations, kspace_noise_attack, location_candidates, map_slice_seed,
                                   map_summary, susceptibility_map)
from fastfn.data import write_annotation_csv
from fastfn.evaluation.studies import StudyConfig, evaluate_studies
from fastfn.models import build_model
from fastfn.seeding import seeded_generator
from test_attack import H, W, h, make_batch, reference_masked_nmse, tiny_model, w
from test_evaluation import _models as two_unets
from test_robust import make_batch as make_square_batch

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


class NoCall(torch.nn.Module):
    """A model that fails the test if it is ever run."""

    def forward(self, *args, **kwargs):
        raise AssertionError("the model ran before the input was checked")


def one_slice(batch: dict, n: int) -> dict:
    return {k: (v[n:n + 1] if torch.is_tensor(v) and v.dim() > 0 else [v[n]] if isinstance(v, list) else v)
            for k, v in batch.items()}


def reference_info(batch: dict, pert: torch.Tensor, reg: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Information change written out: zero-filled magnitudes (torch.fft) with and without the
    feature, MSE inside T over the squared target max."""
    top, left = (H - h) // 2, (W - w) // 2
    def mag(x):
        m = x.abs() if x.dim() == 3 else x.abs().pow(2).sum(1).sqrt()
        return m[:, top:top + h, left:left + w]
    change = mag(ref.ifft2c(k)) - mag(ref.ifft2c(batch["masked_kspace"]))
    return ((change * reg) ** 2).sum((-2, -1)) / reg.sum((-2, -1)) / batch["target"].amax((-2, -1)) ** 2


# ---- susceptibility map -------------------------------------------------------------------------

@pytest.mark.parametrize("coils", [None, 3])
def test_map_location_equals_the_random_attack_on_that_location_alone(coils):
    batch = make_batch(2, coils=coils)
    model = tiny_model(multicoil=coils is not None)
    cfg = AttackConfig(features=FeatureConfig(size=(4, 4), margin=3), random_restarts=3, chunk=7,
                       threshold=0.3, info_threshold=1e-4, seed=5)
    full = susceptibility_map(model, batch, cfg, stride=4)
    locs = grid_locations(batch["target"], cfg.features, 4)
    assert full.worst_nmse.shape == (sum(len(x) for x in locs),) and full.model_evals == 3 * len(full.worst_nmse)
    n0 = len(locs[0])
    picks = [0, n0 - 1, n0 + len(locs[1]) // 2]  # first and last of slice 0, one of slice 1
    for j in picks:
        n = int(full.slice[j])
        loc = torch.stack([full.rows[j], full.cols[j]])[None]
        seed = map_slice_seed(cfg.seed, n)
        alone = susceptibility_map(model, one_slice(batch, n), cfg, stride=4, slice_seeds=[seed], locations=[loc])
        assert alone.worst_nmse.shape == (1,) and alone.model_evals == 3
        torch.testing.assert_close(alone.worst_nmse[0], full.worst_nmse[j], rtol=1e-5, atol=1e-7)
        assert torch.equal(alone.index[0], full.index[j]) and bool(alone.fn[0]) == bool(full.fn[j])
        # independent pipeline: the location's three drawn candidates scored one by one
        g = torch.Generator().manual_seed(seed)
        cands = location_candidates(batch["target"][n], cfg, 4, 3, g)
        gh, gw = full.grid_shape
        flat = int(full.rows[j] // 4) * gw + int(full.cols[j] // 4)
        sub = one_slice(batch, n)
        with torch.no_grad():
            scores = torch.cat([reference_masked_nmse(model, sub, cands.index[flat, r][None],
                                                      cands.values[flat, r][None])[0] for r in range(3)])
            exp, pert, reg, k = reference_masked_nmse(model, sub, full.index[j][None], full.values[j][None])
        torch.testing.assert_close(full.worst_nmse[j], scores.max(), rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(full.worst_nmse[j], exp[0], rtol=1e-4, atol=1e-7)
        assert full.index[j][full.index[j] >= 0].min() >= 0
        info = reference_info(sub, pert, reg, k)[0]
        torch.testing.assert_close(full.info_mse[j], info, rtol=1e-3, atol=1e-9)
        assert bool(full.fn[j]) == (bool(info >= 1e-4) and float(exp[0]) >= 0.3)
    # the map does not depend on the chunk size
    again = susceptibility_map(model, batch, cfg.replace(chunk=64), stride=4)
    torch.testing.assert_close(again.worst_nmse, full.worst_nmse, rtol=1e-5, atol=1e-7)


def test_map_pgd_location_equals_its_attack_alone_and_improves_on_the_starts():
    batch = make_batch(2)
    model = tiny_model()
    cfg = AttackConfig(features=FeatureConfig(family="ellipse", size=(1.5, 1.5), margin=3), method="pgd",
                       pgd_restarts=2, pgd_steps=3, pgd_step_size=0.3, chunk=5, seed=1)
    full = susceptibility_map(model, batch, cfg, stride=6)
    assert full.model_evals == len(full.worst_nmse) * 2 * 4
    img = full.image()   # 5 cells of 6 px cover 30 of the 32 rows: the rest is no location
    assert img.shape == (2, h, w) and torch.isnan(img[:, 30:]).all() and torch.isnan(img[:, :, 30:]).all()
    starts = susceptibility_map(model, batch, cfg.replace(method="random", random_restarts=2), stride=6)
    assert torch.equal(starts.rows, full.rows)
    assert (full.worst_nmse >= starts.worst_nmse - 1e-6).all() and full.worst_nmse.mean() > starts.worst_nmse.mean()
    for j in (1, len(full.worst_nmse) - 2):
        n = int(full.slice[j])
        loc = torch.stack([full.rows[j], full.cols[j]])[None]
        alone = susceptibility_map(model, one_slice(batch, n), cfg, stride=6,
                                   slice_seeds=[map_slice_seed(cfg.seed, n)], locations=[loc])
        torch.testing.assert_close(alone.worst_nmse[0], full.worst_nmse[j], rtol=1e-4, atol=1e-6)
        with torch.no_grad():
            exp = reference_masked_nmse(model, one_slice(batch, n), full.index[j][None], full.values[j][None])[0]
        torch.testing.assert_close(full.worst_nmse[j], exp[0], rtol=1e-4, atol=1e-7)
        # the intensities stay inside the image's [min, max] bounds of the default intensity mode
        v = full.values[j][full.index[j] >= 0]
        t = batch["target"][n]
        assert (v >= t.min() - 1e-6).all() and (v <= t.max() + 1e-6).all()


def test_map_grid_summary_and_labels():
    batch = make_batch(2)
    labels = torch.zeros(2, h, w, dtype=torch.uint8)
    labels[:, :, w // 2:] = 6   # femoral cartilage on the right half
    labels[:, :, :w // 2] = 1   # fat on the left
    batch["labels"] = labels
    model = tiny_model()
    cfg = AttackConfig(features=FeatureConfig(size=(3, 3), margin=3), random_restarts=2, threshold=0.45)
    m = susceptibility_map(model, batch, cfg, stride=4)
    assert torch.equal(m.label, torch.where(m.cols >= w // 2, 6, 1))
    grid = m.grid()
    assert grid.shape == (2, 8, 8)
    for j in range(len(m.worst_nmse)):
        assert grid[m.slice[j], m.rows[j] // 4, m.cols[j] // 4] == m.worst_nmse[j].double()
    assert int(torch.isfinite(grid).sum()) == len(m.worst_nmse)
    img = m.image()
    assert img.shape == (2, h, w)
    j = 3
    cell = img[m.slice[j], m.rows[j] - 2:m.rows[j] + 2, m.cols[j] - 2:m.cols[j] + 2]
    assert (cell == m.worst_nmse[j].double()).all()
    s = map_summary(m, 0.45, {1: "fat", 6: "femoral_cartilage"})
    fn = m.fn.double()
    assert s["fn_fraction"] == pytest.approx(float(fn.mean()))
    assert s["miss_fraction"] == pytest.approx(float((m.worst_nmse >= 0.45).double().mean()))
    right = m.cols >= w // 2
    assert s["per_label"]["femoral_cartilage"]["n_locations"] == int(right.sum())
    assert s["per_label"]["femoral_cartilage"]["fn_fraction"] == pytest.approx(float(fn[right].mean()))
    assert s["per_label"]["fat"]["fn_fraction"] == pytest.approx(float(fn[~right].mean()))
    # every location lies inside the placement region and on the stride grid
    assert ((m.rows - 2) % 4 == 0).all() and ((m.cols - 2) % 4 == 0).all()
    assert (batch["target"][m.slice, m.rows, m.cols] > 0).all()


def test_map_bad_input_raises_before_the_model_runs():
    batch = make_batch(2)
    cfg = AttackConfig(features=FeatureConfig(size=(3, 3), margin=3))
    for stride in (0, -2, 2.5):
        with pytest.raises(ValueError, match="stride"):
            susceptibility_map(NoCall(), batch, cfg, stride=stride)
    with pytest.raises(ValueError, match="no location inside the anatomy region of vol0 slice 0"):
        susceptibility_map(NoCall(), batch, cfg, stride=64)
    big = cfg.replace(family="ellipse", size=(16, 16))
    with pytest.raises(ValueError, match="no location"):
        susceptibility_map(NoCall(), batch, big, stride=4)
    with pytest.raises(ValueError, match="pgd\\+refine"):
        susceptibility_map(NoCall(), batch, cfg.replace(method="pgd+refine"), stride=4)
    with pytest.raises(ValueError, match="not a point of the stride-4 grid"):
        susceptibility_map(NoCall(), batch, cfg, stride=4, locations=[torch.tensor([[3, 6]]), torch.tensor([[2, 6]])])


# ---- contrast-detail ------------------------------------------------------------------------------

def test_contrast_detail_cell_equals_a_separate_attack():
    batch = make_batch(3)
    model = tiny_model()
    base = AttackConfig(features=FeatureConfig(family="ellipse", margin=3), random_restarts=3, threshold=0.02,
                        seed=3)
    sizes, contrasts = (1.0, 2.5), (0.2, 0.8)
    r = contrast_detail_batch(model, batch, base, sizes, contrasts, batch_index=4)
    assert r["worst_nmse"].shape == (2, 2, 3) and r["model_evals"] == 4 * 3 * 3
    for i, s in enumerate(sizes):
        supports = []
        for j, c in enumerate(contrasts):
            cfg = AttackConfig(features=FeatureConfig(family="ellipse", size=(s, s), margin=3,
                                                      intensity_mode="local", intensity=(c, c)),
                               random_restarts=3, threshold=0.02, seed=3)
            sep = run_attack(model, batch, cfg, seeded_generator(cell_seed(3, 4, i)))
            torch.testing.assert_close(r["worst_nmse"][i, j], sep["worst_nmse"])
            assert torch.equal(r["fn"][i, j], sep["fn"]) and torch.equal(r["info_preserved"][i, j],
                                                                          sep["info_preserved"])
            # the contrast is the intensity over the mean tissue intensity under the feature
            for n in range(3):
                px = sep["index"][n][sep["index"][n] >= 0]
                local = batch["target"][n].flatten()[px].mean()
                torch.testing.assert_close(sep["values"][n][sep["index"][n] >= 0] / local,
                                           torch.full((px.numel(),), c), rtol=1e-5, atol=1e-6)
            one = run_attack(model, batch, cfg.replace(random_restarts=1), seeded_generator(cell_seed(3, 4, i)))
            supports.append(one["index"])
        # every contrast of one size sees the same draws (with one candidate: the same winner)
        assert torch.equal(supports[0], supports[1])


def test_contrast_detail_table_and_curve():
    S, C, N = 2, 3, 5
    g = torch.Generator().manual_seed(0)
    worst = torch.rand(S, C, N, generator=g)
    info = torch.ones(S, C, N, dtype=torch.bool)
    info[:, 0] = False                       # the faintest contrast: erased by the undersampling
    fn = info & (worst >= 0.5)
    fn[0, 1] = torch.tensor([True, True, True, False, False])   # size 0, contrast 1: 2 of 5 detected
    fn[0, 2] = False                                              # size 0, contrast 2: all detected
    fn[1, 1:] = True                                              # size 1: never detected
    tab = contrast_detail_table(worst, info, fn, (2, 4), (0.1, 0.3, 0.9), detect_rate=0.4)
    cell = tab["cells"][1]
    assert (cell["size"], cell["contrast"], cell["fn_count"], cell["n_slices"]) == (2, 0.3, 3, 5)
    assert cell["fn_rate_ci95"] == list(wilson_interval(3, 5))
    assert cell["mean_worst_nmse"] == pytest.approx(float(worst[0, 1].double().mean()))
    assert cell["detected_rate"] == pytest.approx(0.4) and tab["detected_rate"][0][0] == 0
    assert tab["curve"] == [0.3, None]
    assert contrast_detail_table(worst, info, fn, (2, 4), (0.1, 0.3, 0.9), detect_rate=0.5)["curve"] == [0.9, None]
    assert tab["fn_rate"][1] == [0.0, 1.0, 1.0]


def test_contrast_detail_bad_grid_raises_before_the_model_runs():
    batch = make_batch(1)
    cfg = AttackConfig(features=FeatureConfig(margin=3))
    for sizes, contrasts, match in (((), (0.5,), "no sizes"), ((2,), (), "no contrasts"),
                                    ((2,), (-0.1, 0.5), "contrasts must be"), ((0, 2), (0.5,), "sizes must be"),
                                    ((2, 2), (0.5,), "repeat")):
        with pytest.raises(ValueError, match=match):
            contrast_detail_batch(NoCall(), batch, cfg, sizes, contrasts)


# ---- k-space noise --------------------------------------------------------------------------------

def _norm(x):
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1)


@pytest.mark.parametrize("coils", [None, 3])
def test_noise_norm_is_the_level_and_beats_random_noise(coils):
    batch = make_batch(3, coils=coils)
    model = tiny_model(multicoil=coils is not None)
    cfg = NoiseConfig(steps=4, chunk=2)
    level = 0.02
    r = kspace_noise_attack(model, batch, level, cfg, generator=torch.Generator().manual_seed(0))
    k = batch["masked_kspace"]
    for key in ("noise", "random_noise"):
        e = r[key]
        assert e.shape == k.shape
        torch.testing.assert_close(_norm(e), level * _norm(k), rtol=1e-5, atol=0)
        off = (batch["mask"] if coils is None else batch["mask"][:, None]) == 0
        assert (e * off).abs().max() == 0          # only sampled positions are perturbed
    # the reported metrics are those of the model on the perturbed measurements
    t = batch["target"]
    with torch.no_grad():
        p_adv = model(k + r["noise"], batch["mask"], (h, w))
        p_rand = model(k + r["random_noise"], batch["mask"], (h, w))
    hand = lambda p: (((t - p) ** 2).sum((-2, -1)) / (t ** 2).sum((-2, -1))).double()  # noqa: E731
    torch.testing.assert_close(r["adversarial"]["nmse"], hand(p_adv), rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(r["random"]["nmse"], hand(p_rand), rtol=1e-4, atol=1e-9)
    assert (r["adversarial"]["nmse"] >= r["random"]["nmse"]).all()
    assert (r["adversarial"]["nmse"] > r["random"]["nmse"] * (1 + 1e-3)).all()   # the search gains
    assert r["model_evals"] == 3 * 5
    # another draw of the random noise: the attack is still at least as bad, on average
    other = kspace_noise_attack(model, batch, level, NoiseConfig(steps=0), generator=torch.Generator().manual_seed(9))
    assert r["adversarial"]["nmse"].mean() > other["random"]["nmse"].mean()


def test_noise_level_zero_gives_the_clean_metrics():
    batch = make_square_batch(3)
    model = build_model("unet", chans=4, num_pool_layers=1).eval()
    r = kspace_noise_attack(model, batch, 0.0, NoiseConfig(steps=3), generator=torch.Generator().manual_seed(0))
    assert (r["noise"] == 0).all() and r["model_evals"] == 3
    with torch.no_grad():
        pred = model(batch["masked_kspace"], batch["mask"], (32, 32))
    for n in range(3):
        gt, p, mx = batch["target"][n].double().numpy(), pred[n].double().numpy(), float(batch["max"][n])
        assert float(r["adversarial"]["nmse"][n]) == pytest.approx(((gt - p) ** 2).sum() / (gt ** 2).sum(), rel=1e-5)
        assert float(r["adversarial"]["psnr"][n]) == pytest.approx(peak_signal_noise_ratio(gt, p, data_range=mx),
                                                                   rel=1e-5)
        assert float(r["adversarial"]["ssim"][n]) == pytest.approx(
            structural_similarity(gt, p, data_range=mx, win_size=7), abs=1e-5)
        for key in ("nmse", "psnr", "ssim"):
            assert float(r["random"][key][n]) == float(r["adversarial"][key][n])


def test_noise_aimed_at_boxes():
    batch = make_batch(3)
    model = tiny_model()
    boxes = torch.zeros(3, h, w)
    boxes[0, 10:16, 8:20] = 1
    boxes[2, 18:24, 12:18] = 1
    r = kspace_noise_attack(model, batch, 0.02, NoiseConfig(steps=4), boxes=boxes, aim="region",
                            generator=torch.Generator().manual_seed(1))
    assert math.isnan(float(r["adversarial"]["region_nmse"][1]))
    t = batch["target"]
    with torch.no_grad():
        p = model(batch["masked_kspace"] + r["noise"], batch["mask"], (h, w))
    for n in (0, 2):
        b = boxes[n]
        exp = float(((b * (t[n] - p[n])) ** 2).sum() / ((b * t[n]) ** 2).sum())
        assert float(r["adversarial"]["region_nmse"][n]) == pytest.approx(exp, rel=1e-4)
        assert r["adversarial"]["region_nmse"][n] > r["random"]["region_nmse"][n]
        # the objective is the squared error inside the box
        assert float(r["objective"][n]) == pytest.approx(float(((b * (p[n] - t[n])) ** 2).sum()), rel=1e-4)
    # aiming at the box hurts the box more than aiming at the whole image does
    whole = kspace_noise_attack(model, batch, 0.02, NoiseConfig(steps=4), boxes=boxes, aim="image",
                                generator=torch.Generator().manual_seed(1))
    assert (r["adversarial"]["region_nmse"][[0, 2]] >= whole["adversarial"]["region_nmse"][[0, 2]] * 0.999).all()
    # the zero-filled input as a model: its level-0 error is the zero-filled image's
    zf = kspace_noise_attack(ZeroFilled(), batch, 0.0, generator=torch.Generator().manual_seed(1))
    top, left = (H - h) // 2, (W - w) // 2
    zf_img = ref.ifft2c(batch["masked_kspace"]).abs()[:, top:top + h, left:left + w]
    hand = (((t - zf_img) ** 2).sum((-2, -1)) / (t ** 2).sum((-2, -1))).double()
    torch.testing.assert_close(zf["adversarial"]["nmse"], hand, rtol=1e-4, atol=1e-9)


def test_noise_bad_input_raises_before_the_model_runs():
    batch = make_batch(2)
    with pytest.raises(ValueError, match="noise levels must be"):
        kspace_noise_attack(NoCall(), batch, -0.01)
    with pytest.raises(ValueError, match="noise levels must be"):
        NoiseConfig(levels=(0.0, -0.002))
    with pytest.raises(ValueError, match="needs box maps"):
        kspace_noise_attack(NoCall(), batch, 0.01, aim="region")
    with pytest.raises(ValueError, match="cover no slice"):
        kspace_noise_attack(NoCall(), batch, 0.01, boxes=torch.zeros(2, h, w), aim="region")
    with pytest.raises(ValueError, match="must match"):
        kspace_noise_attack(NoCall(), batch, 0.01, boxes=torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match="aim"):
        kspace_noise_attack(NoCall(), batch, 0.01, aim="box")


# ---- the evaluation: several models, same draws, files ------------------------------------------

def test_evaluate_studies_same_draws_for_every_model_and_files(tmp_path):
    a, b = two_unets()
    batches = [make_square_batch(B=2, seed=s) for s in range(2)]
    batches[1]["slice"] = batches[1]["slice"] + 2
    load = lambda data, spec, bs, n: batches  # noqa: E731
    rows = [{"file": "v0", "slice": 0, "study_level": "No", "x": 8, "y": 10, "width": 10, "height": 8,
             "label": "Meniscus Tear"},
            {"file": "v1", "slice": 3, "study_level": "No", "x": 12, "y": 4, "width": 8, "height": 8,
             "label": "Cartilage"}]
    csv_path = write_annotation_csv(tmp_path / "boxes.csv", rows)
    attack = AttackConfig(features=FeatureConfig(size=(3, 3), margin=4), random_restarts=2, threshold=0.05, seed=2)
    config = StudyConfig(stride=8, map_slices=3, sizes=(2, 4), contrasts=(0.3, 1.0),
                         noise=NoiseConfig(levels=(0.0, 0.01), steps=2), figure_slices=1)
    out = tmp_path / "out"
    rep = evaluate_studies([("A", a), ("A again", a), ("B", b)], None, "random:4x@0.08", out, attack=attack,
                           config=config, annotations=csv_path, progress=False, load_batches=load)
    assert rep["studies"] == ["map", "detectability", "noise"] and rep["models"] == ["A", "A again", "B"]
    # the same model twice: identical results everywhere (same slices, draws, noise)
    m = json.loads((out / "map" / "map.json").read_text())
    assert m["models"]["A"]["per_slice"] == [{**s, "model": "A"} for s in m["models"]["A again"]["per_slice"]]
    assert len(m["models"]["A"]["per_slice"]) == 3
    grid_a, grid_b = np.load(out / "map" / "A_nmse.npy"), np.load(out / "map" / "B_nmse.npy")
    np.testing.assert_array_equal(grid_a, np.load(out / "map" / "A_again_nmse.npy"))
    assert grid_a.shape == (3, 4, 4) and np.array_equal(np.isnan(grid_a), np.isnan(grid_b))
    assert not np.allclose(np.nan_to_num(grid_a), np.nan_to_num(grid_b))
    counts = m["histogram"]["counts"]
    assert sum(counts["A"]) == int(np.isfinite(grid_a).sum()) == m["models"]["A"]["n_locations"]
    fn = np.load(out / "map" / "A_fn.npy")
    assert m["models"]["A"]["fn_fraction"] == pytest.approx(float(np.nanmean(fn)))
    d = json.loads((out / "detectability" / "detectability.json").read_text())
    assert d["models"]["A"]["cells"] == d["models"]["A again"]["cells"]
    assert d["models"]["A"]["cells"][0]["n_slices"] == 4 and len(d["models"]["A"]["curve"]) == 2
    nz = json.loads((out / "noise" / "noise.json").read_text())
    img = nz["aims"]["image"]
    assert set(img) == {"A", "A again", "B", "zero-filled"} and img["A"] == img["A again"]
    for name, c in img.items():   # level 0 is the clean reconstruction; the attack beats random noise
        assert c["adversarial"]["nmse"][0] == pytest.approx(c["clean"]["nmse"], rel=1e-9)
        assert c["adversarial"]["nmse"][1] >= c["random"]["nmse"][1]
    assert set(nz["aims"]) == {"image", "region"}
    lines = (out / "noise" / "slices.jsonl").read_text().splitlines()
    # 4 runs x (image: 4 slices + region: 2 slices) x 2 levels x 2 kinds
    assert len(lines) == 4 * 6 * 2 * 2
    assert (out / "map" / "slices.csv").read_text().count("\n") == 1 + 3 * 3
    for f in rep["figures"]:
        assert (out / f).stat().st_size > 1000
    assert {"map/map_hist.png", "map/map_slice0.png", "detectability/contrast_detail.png",
            "detectability/detectability_heat.png", "noise/noise_image.png", "noise/noise_region.png"} \
        <= set(rep["figures"])
    assert json.loads((out / "studies.json").read_text())["seeds"] == {"attack": 2, "noise": 0}


def test_evaluate_studies_bad_input_raises_before_any_model(tmp_path):
    batches = [make_square_batch(B=2)]
    load = lambda *x: batches  # noqa: E731
    models = [("X", NoCall())]
    with pytest.raises(ValueError, match="unknown or no study"):
        evaluate_studies(models, None, "random:4x@0.08", tmp_path, studies="map,fgsm", load_batches=load)
    with pytest.raises(ValueError, match="no location"):
        evaluate_studies(models, None, "random:4x@0.08", tmp_path, studies="map", config=StudyConfig(stride=64),
                         load_batches=load)
    csv_path = write_annotation_csv(tmp_path / "boxes.csv", [
        {"file": "other", "slice": 0, "study_level": "No", "x": 1, "y": 1, "width": 4, "height": 4, "label": "x"}])
    with pytest.raises(ValueError, match="name no evaluated slice"):
        evaluate_studies(models, None, "random:4x@0.08", tmp_path, studies="noise", annotations=csv_path,
                         load_batches=load)
    with pytest.raises(ValueError, match="noise levels must be"):
        StudyConfig(noise={"levels": (0.01, -1.0)})
    with pytest.raises(ValueError, match="contrasts must be"):
        StudyConfig(contrasts=(0.0, 0.5))


def test_contrasts_no_false_negative_can_have_are_refused():
    from fastfn.attack.studies.detectability import check_contrasts, faintest_missable
    # a dropped feature of contrast c leaves (c / (1 + c))^2: at the bound exactly the threshold
    for t in (1e-3, 0.05, 0.2):
        c = faintest_missable(t)
        assert (c / (1 + c)) ** 2 == pytest.approx(t)
    check_contrasts((0.3, 1.0), 0.05)
    with pytest.raises(ValueError, match=r"contrasts \[0.1\] are below 0.288"):
        check_contrasts((0.1, 0.5), 0.05)
