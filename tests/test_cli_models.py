"""Models researchers already have, from the command line: fastMRI's networks through
--weights (attack, eval, evaluate-robustness), fine-tuning with train --init-from, and
the reports' contamination warning."""
from __future__ import annotations

import json

import pytest
import torch

from fastfn.attack import AttackConfig, FeatureConfig, attack_dataset
from fastfn.cli import main
from fastfn.data import KspaceTransform, SliceDataset, collate, parse_mask_spec, write_synthetic_dataset
from fastfn.models import from_fastmri

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

SMALL = ["--model", "unet", "--model-config", "chans=8", "--model-config", "num_pool_layers=2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root / "train", volumes=2, slices=2, size=48, seed=0)
    write_synthetic_dataset(root / "val", volumes=1, slices=3, size=48, seed=1)
    return root


@pytest.fixture(scope="module")
def fastmri_unet(fastmri, tmp_path_factory):
    """A randomly initialised fastmri.models.Unet, its bare state_dict file and a
    Lightning-style checkpoint of it (fastMRI's UnetModule prefixes ``unet.``)."""
    torch.manual_seed(3)
    net = fastmri.models.Unet(in_chans=1, out_chans=1, chans=8, num_pool_layers=2, drop_prob=0.0).eval()
    d = tmp_path_factory.mktemp("weights")
    torch.save(net.state_dict(), d / "unet_state_dict.pt")
    torch.save({"state_dict": {f"unet.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"chans": 8}, "epoch": 3}, d / "unet.ckpt")
    return net, d


def test_attack_with_fastmri_weights_equals_the_wrapped_fastmri_module(data, fastmri_unet, tmp_path):
    net, d = fastmri_unet
    out = tmp_path / "att"
    rc = main(["attack", "--weights", str(d / "unet_state_dict.pt"), *SMALL, "--data", str(data / "val"),
               "--method", "pgd", "--pgd-restarts", "2", "--pgd-steps", "2", "--size", "3,5", "--margin", "3",
               "--out", str(out), "--panels", "0", "--no-progress", "--device", "cpu", "--batch-size", "2"])
    assert rc == 0
    cli = [json.loads(line) for line in (out / "slices.jsonl").read_text().splitlines()]
    # the same attack on fastMRI's own module, wrapped, through the library
    ds = SliceDataset(data / "val", KspaceTransform(parse_mask_spec("random:4x@0.08")))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    cfg = AttackConfig(features=FeatureConfig(size=(3, 5), margin=3), method="pgd", pgd_restarts=2, pgd_steps=2)
    ref = attack_dataset(from_fastmri(net), loader, cfg)["records"]
    assert [r["worst_nmse"] for r in cli] == pytest.approx([r["worst_nmse"] for r in ref], rel=1e-5)
    assert [r["feature_rows"] for r in cli] == [r["feature_rows"] for r in ref]


def test_eval_and_robustness_take_weights_and_warn_of_contamination(data, fastmri_unet, tmp_path):
    _, d = fastmri_unet
    rc = main(["eval", "--weights", str(d / "unet.ckpt"), *SMALL, "--data", str(data / "val"),
               "--out", str(tmp_path / "ev"), "--device", "cpu", "--trained-on-val"])
    assert rc == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["model_name"] == "unet" and metrics["warnings"] and "validation" in metrics["warnings"][0]
    rc = main(["evaluate-robustness", "--weights", str(d / "unet_state_dict.pt"), "--weights", str(d / "unet.ckpt"),
               *SMALL, "--data", str(data / "val"), "--masks", "random:4x@0.08", "--attacks", "random",
               "--random-restarts", "2", "--size", "3,3", "--margin", "3", "--out", str(tmp_path / "rob"),
               "--no-progress", "--device", "cpu", "--trained-on-val"])
    assert rc == 0
    rep = json.loads((tmp_path / "rob" / "robustness.json").read_text())
    r = rep["results"]["random:4x@0.08"]
    # the bare state_dict and the Lightning checkpoint hold the same network
    assert r["unet_state_dict"]["random"]["worst_nmse"] == r["unet"]["random"]["worst_nmse"]
    assert rep["warnings"] and "**Warning:**" in (tmp_path / "rob" / "robustness.md").read_text()


def test_model_flags_fail_clearly(data, fastmri_unet, tmp_path, capsys):
    _, d = fastmri_unet
    out = ["--data", str(data / "val"), "--out", str(tmp_path / "x"), "--no-progress", "--device", "cpu"]
    assert main(["attack", "--weights", str(d / "unet_state_dict.pt"), *out]) == 2
    assert "--weights needs --model" in capsys.readouterr().err
    assert main(["attack", "--weights", str(d / "unet_state_dict.pt"), "--model", "unet",
                 "--model-config", "chans=16", *out]) == 2
    err = capsys.readouterr().err
    assert "keys with other shapes" in err and "'chans': 16" in err       # the key lists, the config tried
    assert main(["attack", *out]) == 2 and "--ckpt PATH" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_train_init_from_a_lightning_checkpoint_fine_tunes_those_weights(data, fastmri_unet, tmp_path, capsys):
    net, d = fastmri_unet
    run = tmp_path / "ft"
    rc = main(["train", "--init-from", str(d / "unet.ckpt"), *SMALL, "--data", str(data), "--steps", "1",
               "--val-every", "1", "--lr", "1e-12", "--robust-attack", "pgd", "--robust-size", "3,5",
               "--robust-pgd-steps", "1", "--robust-margin", "3", "--out", str(run), "--no-progress",
               "--no-tensorboard", "--device", "cpu", "--panels", "0"])
    assert rc == 0
    from fastfn.train.checkpoint import load_reconstructor
    model, meta = load_reconstructor(run / "last.pt")
    assert meta["config"]["init_from"] == str(d / "unet.ckpt")
    for name, p in net.state_dict().items():            # one step at lr 1e-12: still fastMRI's weights
        torch.testing.assert_close(model.state_dict()[f"module.{name}"], p, atol=1e-8, rtol=0)
    rc = main(["train", "--init-from", str(d / "unet.ckpt"), "--model", "unet", "--model-config", "chans=8",
               "--data", str(data), "--steps", "1", "--out", str(tmp_path / "bad"), "--no-progress",
               "--no-tensorboard", "--device", "cpu"])
    assert rc == 2 and "num_pool_layers: file 2 vs run 4" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_attack_with_a_fastmri_varnet_state_dict_on_multicoil_data(fastmri, tmp_path):
    write_synthetic_dataset(tmp_path / "mc", volumes=1, slices=2, coils=3, size=48, seed=4)
    torch.manual_seed(5)
    net = fastmri.models.VarNet(num_cascades=1, sens_chans=2, sens_pools=2, chans=4, pools=2).eval()
    torch.save(net.state_dict(), tmp_path / "varnet.pt")
    out = tmp_path / "att"
    rc = main(["attack", "--weights", str(tmp_path / "varnet.pt"), "--model", "varnet", "--data", str(tmp_path / "mc"),
               "--size", "3,5", "--margin", "3", "--random-restarts", "3", "--out", str(out), "--panels", "0",
               "--no-progress", "--device", "cpu", "--batch-size", "2"])
    assert rc == 0                                  # the architecture read off the weights
    cli = [json.loads(line)["worst_nmse"] for line in (out / "slices.jsonl").read_text().splitlines()]
    ds = SliceDataset(tmp_path / "mc", KspaceTransform(parse_mask_spec("random:4x@0.08")))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    cfg = AttackConfig(features=FeatureConfig(size=(3, 5), margin=3), random_restarts=3)
    ref = [r["worst_nmse"] for r in attack_dataset(from_fastmri(net), loader, cfg)["records"]]
    assert cli == pytest.approx(ref, rel=1e-4)


def test_files_without_a_fully_sampled_target_are_refused(tmp_path, capsys):
    """fastMRI's test and challenge files hold undersampled k-space and no target: neither the
    attack nor the lesion metrics can score them, and both say so before any model runs."""
    import numpy as np

    from fastfn.data import write_fastmri_h5
    from fastfn.data.annotations import write_annotation_csv
    from fastfn.models import build_model
    from fastfn.train.checkpoint import save_model
    rng = np.random.default_rng(0)
    (tmp_path / "test").mkdir()
    write_fastmri_h5(tmp_path / "test" / "test_000.h5", (rng.standard_normal((2, 32, 32)) + 0j).astype(np.complex64))
    write_annotation_csv(tmp_path / "boxes.csv", [{"file": "test_000", "slice": 0, "study_level": "No", "x": 4,
                                                    "y": 4, "width": 8, "height": 8, "label": "Tear"}])
    model = build_model("unet", chans=4, num_pool_layers=1)
    save_model(model, tmp_path / "m.pt")
    rc = main(["attack", "--ckpt", str(tmp_path / "m.pt"), "--data", str(tmp_path / "test"), "--out",
               str(tmp_path / "a"), "--no-progress", "--device", "cpu"])
    assert rc == 2 and "test_000.h5 has no target image" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    rc = main(["lesions", "--ckpt", str(tmp_path / "m.pt"), "--data", str(tmp_path / "test"),
               "--annotations", str(tmp_path / "boxes.csv"), "--out", str(tmp_path / "l"), "--device", "cpu"])
    assert rc == 2 and "test_000.h5 has none" in capsys.readouterr().err
