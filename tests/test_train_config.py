"""TrainConfig: YAML loading, dotted overrides, validation errors naming the key."""
from __future__ import annotations

import pytest
import yaml

from fastfn.train.config import TrainConfig, load_config, parse_override, save_config


def test_defaults_roundtrip_through_yaml(tmp_path):
    cfg = TrainConfig()
    path = tmp_path / "c.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert again.to_dict() == yaml.safe_load(path.read_text())


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: cascade\nmodel_config: {num_cascades: 3}\noptim: {lr: 1e-3, name: adamw}\n"
                    "steps: 50\n")
    cfg = load_config(path, {"optim.lr": 2e-4, "sched.name": "cosine",
                             "model_config.chans": 8})
    assert cfg.model == "cascade" and cfg.steps == 50
    assert cfg.optim.name == "adamw" and cfg.optim.lr == pytest.approx(2e-4)
    assert cfg.sched.name == "cosine"
    assert cfg.model_config == {"num_cascades": 3, "chans": 8}
    # "1e-3" without a dot is a YAML string; it still becomes a float
    assert isinstance(load_config(path).optim.lr, float)


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lrr: 0.1}\n")
    with pytest.raises(KeyError, match="optim.lrr"):
        load_config(path)
    with pytest.raises(KeyError, match="data.bogus"):
        TrainConfig().replace({"data.bogus": 1})


@pytest.mark.parametrize("override, key", [
    ({"optim.name": "sgd"}, "optim.name"),
    ({"loss": "huber"}, "loss"),
    ({"steps": 0}, "steps"),
    ({"steps": "many"}, "steps"),
    ({"optim.lr": -1.0}, "optim.lr"),
    ({"data.val_fraction": 1.5}, "data.val_fraction"),
    ({"optim.betas": [0.9]}, "optim.betas"),
])
def test_bad_values_raise_naming_the_key(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        TrainConfig().replace(override)


def test_missing_and_invalid_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(bad)


def test_parse_override():
    assert parse_override("optim.lr=3e-4") == ("optim.lr", 3e-4)
    assert parse_override("grad_clip=null") == ("grad_clip", None)
    assert parse_override("data.train=/a=b") == ("data.train", "/a=b")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_override("optim.lr")
