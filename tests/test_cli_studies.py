"""The robustness studies from the command line: evaluate-robustness --studies, their report
section, and list-valued settings read from flags and mappings."""
from __future__ import annotations

import json

import pytest
import torch

from fastfn.cli import main
from fastfn.configs import from_plain
from fastfn.data import write_synthetic_dataset
from fastfn.evaluation.studies import StudyConfig
from fastfn.models import build_model
from fastfn.train.checkpoint import save_model

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    write_synthetic_dataset(root / "val", volumes=1, slices=2, size=32, seed=1)
    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        model = build_model("unet", chans=4, num_pool_layers=1)
        save_model(model, root / f"{name}.pt")
    return root


def _args(root, out):
    return ["evaluate-robustness", "--ckpt", str(root / "a.pt"), "--ckpt", str(root / "b.pt"), "--name", "A",
            "--name", "B", "--data", str(root / "val"), "--masks", "random:4x@0.08", "--out", str(out),
            "--no-progress", "--device", "cpu", "--size", "2,3", "--margin", "2", "--random-restarts", "2",
            "--pgd-restarts", "1", "--pgd-steps", "1", "--study-stride", "8", "--study-map-slices", "1",
            "--study-sizes", "2,4", "--study-contrasts", "0.5,1", "--study-levels", "0,0.01",
            "--study-steps", "1"]


def test_studies_run_beside_the_protocol_and_join_its_report(setup, tmp_path):
    out = tmp_path / "rob"
    assert main([*_args(setup, out), "--studies", "map,detectability,noise"]) == 0
    md = (out / "robustness.md").read_text()
    assert md.startswith("| mask | model |") and "## Robustness studies" in md
    studies = json.loads((out / "studies" / "studies.json").read_text())
    assert studies["studies"] == ["map", "detectability", "noise"] and studies["models"] == ["A", "B"]
    assert studies["config"]["sizes"] == [2.0, 4.0] and studies["config"]["noise"]["levels"] == [0.0, 0.01]
    for f in studies["figures"]:
        assert (out / "studies" / f).stat().st_size > 1000
    for name in ("A", "B"):
        assert f"| {name} | " in md.split("## Robustness studies")[1]


def test_studies_only_and_bad_study_names(setup, tmp_path, capsys):
    out = tmp_path / "only"
    assert main([*_args(setup, out), "--studies", "detectability", "--studies-only"]) == 0
    assert not (out / "robustness.json").exists() and (out / "studies" / "detectability").is_dir()
    assert "Contrast-detail curve" in (out / "robustness.md").read_text()
    assert main([*_args(setup, tmp_path / "bad"), "--studies", "maps"]) == 2
    assert "maps" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_list_settings_from_mappings():
    cfg = from_plain(StudyConfig, {"sizes": [1, 2], "contrasts": [0.5], "noise": {"levels": [0, 0.01]}})
    assert cfg.sizes == (1.0, 2.0) and cfg.contrasts == (0.5,) and cfg.noise.levels == (0.0, 0.01)
    with pytest.raises(ValueError, match="'sizes' must be a non-empty list"):
        from_plain(StudyConfig, {"sizes": []})
