"""The robustness protocol: mask lists, intervals, same feature draws per model, outputs."""
from __future__ import annotations

import json

import pytest
import torch
from scipy.stats import binomtest

from fastfn.attack import AttackConfig, FeatureConfig
from fastfn.attack.report import wilson_interval
from fastfn.data import split_mask_specs
from fastfn.evaluation.protocol import evaluate_robustness
from fastfn.evaluation.tables import markdown_table
from fastfn.models import build_model
from test_robust import make_batch


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def test_split_mask_specs():
    assert split_mask_specs("random:4x@0.08,random:8x@0.04") == ["random:4x@0.08", "random:8x@0.04"]
    assert split_mask_specs("random:4x@0.08,8x@0.04, equispaced:4x@0.08") == [
        "random:4x@0.08,8x@0.04", "equispaced:4x@0.08"]
    with pytest.raises(ValueError, match="--masks"):
        split_mask_specs(" , ")


@pytest.mark.parametrize("k,n", [(0, 20), (3, 20), (20, 20), (17, 64)])
def test_wilson_interval_matches_scipy(k, n):
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)


@pytest.mark.parametrize("n", [8, 10, 32])
def test_wilson_interval_contains_the_rate_exactly_at_the_ends(n):
    """k = n gave 1 - 1e-16 as the upper bound for n = 10, and the sweep's error bar a
    negative length (matplotlib refused to draw the trade-off figure)."""
    for k in range(n + 1):
        lo, hi = wilson_interval(k, n)
        assert lo <= k / n <= hi
    assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0


def _models():
    torch.manual_seed(0)
    a = build_model("unet", chans=4, num_pool_layers=1)
    torch.manual_seed(1)
    b = build_model("unet", chans=4, num_pool_layers=1)
    return a, b


def test_protocol_uses_the_same_draws_for_every_model_and_writes_reports(tmp_path):
    a, b = _models()
    batches = [make_batch(B=3, seed=s) for s in range(2)]
    batches[1]["slice"] = batches[1]["slice"] + 3  # volume v<i>.h5 has slices i and i + 3
    attack = AttackConfig(features=FeatureConfig(size=(3, 6)), random_restarts=3, pgd_restarts=2,
                          pgd_steps=2, threshold=1e-3, seed=7)
    load = lambda data, spec, bs, n: batches  # noqa: E731
    rep = evaluate_robustness([("A", a), ("A again", a), ("B", b)], None, "random:4x@0.08",
                              tmp_path, attack=attack, progress=False, load_batches=load)
    r = rep["results"]["random:4x@0.08"]
    # the same model evaluated twice sees identical features: identical results
    for attack in ("random", "pgd"):
        assert r["A"][attack]["worst_nmse"] == r["A again"][attack]["worst_nmse"]
        assert r["A"][attack]["n_slices"] == 6
    assert r["A"]["random"]["worst_nmse"] != r["B"]["random"]["worst_nmse"]
    # FN rate and interval are consistent with the per-slice records
    s = r["B"]["pgd"]
    assert s["fn_rate"] == pytest.approx(s["fn_count"] / s["n_slices"])
    assert s["fn_rate_ci95"][0] <= s["fn_rate"] <= s["fn_rate_ci95"][1]
    # clean metrics follow fastMRI: recompute the NMSE of volume v0.h5 by hand
    with torch.no_grad():
        preds = [a(bt["masked_kspace"], bt["mask"], (32, 32))[0] for bt in batches]
    tgts = [bt["target"][0] for bt in batches]
    nmse = sum(float(((t - p) ** 2).sum()) for t, p in zip(tgts, preds)) / sum(
        float((t ** 2).sum()) for t in tgts)
    assert r["A"]["clean"]["per_volume"]["v0.h5"]["nmse"] == pytest.approx(nmse, rel=1e-4)
    on_disk = json.loads((tmp_path / "robustness.json").read_text())
    assert on_disk["models"] == ["A", "A again", "B"]
    md = (tmp_path / "robustness.md").read_text()
    assert md == markdown_table(on_disk) and md.count("| random:4x@0.08 |") == 3
    for f in on_disk["figures"]:
        assert (tmp_path / f).stat().st_size > 1000
    assert {"nmse_random_4x_0_08.png", "worst_random_4x_0_08.png"} <= set(on_disk["figures"])


def test_protocol_bad_input(tmp_path):
    a, _ = _models()
    with pytest.raises(ValueError, match="unknown attack"):
        evaluate_robustness([("A", a)], None, "random:4x@0.08", tmp_path, attacks=("fgsm",),
                            load_batches=lambda *x: [make_batch()])
    with pytest.raises(ValueError, match="no model"):
        evaluate_robustness([], None, "random:4x@0.08", tmp_path,
                            load_batches=lambda *x: [make_batch()])
    with pytest.raises(FileNotFoundError):
        evaluate_robustness([tmp_path / "missing.pt"], None, "random:4x@0.08", tmp_path,
                            load_batches=lambda *x: [make_batch()])
