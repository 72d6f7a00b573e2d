"""Checkpoints: atomic writes, weights_only loads, rebuilding models, clear errors."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from fastfn.train import checkpoint as ckpt
from test_train_support import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _state(model_name="unet", model_config=None, **extra):
    from fastfn.models import build_model
    model_config = model_config or {"chans": 4, "num_pool_layers": 2}
    model = build_model(model_name, **model_config)
    return model, {"format": ckpt.FORMAT, "version": ckpt.VERSION, "model_name": model_name,
                   "model_config": model_config, "model": model.state_dict(), "step": 7,
                   "config": {"steps": 10}, "metrics": {"ssim": 0.5}, "best_ssim": 0.5, **extra}


def test_roundtrip_rebuilds_the_same_model(tmp_path):
    model, state = _state()
    path = tmp_path / "a.pt"
    ckpt.save_checkpoint(state, path)
    # a plain weights_only load works: nothing but tensors and primitives inside
    raw = torch.load(path, weights_only=True)
    assert raw["model_name"] == "unet" and raw["step"] == 7
    loaded, meta = ckpt.load_reconstructor(path)
    assert meta["step"] == 7 and meta["model_config"] == {"chans": 4, "num_pool_layers": 2}
    assert not loaded.training
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    k = torch.randn(1, 32, 32, dtype=torch.complex64)
    mask = torch.ones(1, 1, 32)
    model.eval()
    torch.testing.assert_close(loaded(k, mask, crop_size=(16, 16)), model(k, mask, crop_size=(16, 16)))
    assert not list(tmp_path.glob("*.tmp"))


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    _, state = _state()
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(state, path)
    before = path.read_bytes()

    def boom(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(state, path)
    assert path.read_bytes() == before          # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp left


def test_missing_corrupt_truncated(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ckpt.CheckpointError, match="junk.pt.*corrupt"):
        ckpt.load_checkpoint(junk)
    _, state = _state()
    good = tmp_path / "good.pt"
    ckpt.save_checkpoint(state, good)
    cut = tmp_path / "cut.pt"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="cut.pt"):
        ckpt.load_reconstructor(cut)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ckpt.CheckpointError, match="not a fastfn checkpoint"):
        ckpt.load_checkpoint(other)


def test_pickled_objects_are_refused(tmp_path):
    """weights_only: a checkpoint carrying an arbitrary object does not load."""
    _, state = _state()
    state["config"] = Path("/tmp")  # not an allowed type for weights_only
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    with pytest.raises(ckpt.CheckpointError, match="evil.pt"):
        ckpt.load_checkpoint(path)


def test_other_model_or_config_is_named(tmp_path):
    _, state = _state()
    with pytest.raises(ckpt.CheckpointError, match="'unet' model, not 'cascade'"):
        ckpt.check_same_model(state, "cascade", {}, "x.pt")
    with pytest.raises(ckpt.CheckpointError, match="chans: checkpoint 4 vs requested 8"):
        ckpt.check_same_model(state, "unet", {"chans": 8, "num_pool_layers": 2}, "x.pt")
    ckpt.check_same_model(state, "unet", {"chans": 4, "num_pool_layers": 2}, "x.pt")
    # weights that do not fit the architecture the config names
    _, bad = _state()
    bad["model_config"] = {"chans": 8, "num_pool_layers": 2}
    path = tmp_path / "mismatch.pt"
    ckpt.save_checkpoint(bad, path)
    with pytest.raises(ckpt.CheckpointError, match="mismatch.pt.*does not fit"):
        ckpt.load_reconstructor(path)


def test_rng_state_roundtrip(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    _, state = _state()
    state["rng"] = ckpt.rng_state()  # captured after the model init drew its numbers
    path = tmp_path / "rng.pt"
    ckpt.save_checkpoint(state, path)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    ckpt.set_rng_state(ckpt.load_checkpoint(path)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_export_weights_drops_training_state(tmp_path):
    _, state = _state(optimizer={"state": {}, "param_groups": []}, rng=ckpt.rng_state())
    src, dst = tmp_path / "full.pt", tmp_path / "weights.pt"
    ckpt.save_checkpoint(state, src)
    ckpt.export_weights(src, dst)
    out = ckpt.load_checkpoint(dst)
    assert "optimizer" not in out and "rng" not in out and out["model_name"] == "unet"
    assert os.path.getsize(dst) < os.path.getsize(src)
