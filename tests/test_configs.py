"""One attack configuration: composed dataclasses, old layouts that still load, CLI flags from fields."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from fastfn.attack import AttackConfig, FeatureConfig
from fastfn.cli.config_flags import add_config_flags, config_from_args
from fastfn.configs import field_docs, from_plain
from fastfn.evaluation.demo import DemoConfig
from fastfn.train.config import TrainConfig, load_config, parse_override
from fastfn.train.robust import RobustConfig, default_attack

DATA = Path(__file__).parent / "data"


def _leaves(cls):
    for f in dataclasses.fields(cls):
        tp = {a.name: a for a in dataclasses.fields(cls)}[f.name].type
        if f.name == "features":
            yield from _leaves(FeatureConfig)
        elif f.name == "attack" and cls is RobustConfig:
            yield from _leaves(AttackConfig)
        else:
            yield f.name, tp


def test_checkpoint_written_before_the_composed_config_still_loads():
    # written by fastfn at d8fca35 (flat RobustConfig: attack="pgd", size, restarts, ... beside beta)
    state = torch.load(DATA / "legacy_robust_unet.pt", weights_only=True)
    assert state["config"]["robust"]["attack"] == "pgd"          # really the old layout
    cfg = TrainConfig.from_dict(state["config"], source="legacy checkpoint")
    assert cfg.robust == RobustConfig(
        attack=default_attack(method="pgd", size=(5, 15), intensity=(0.1, 0.9), ring=2, random_restarts=2,
                              pgd_restarts=2, pgd_steps=2, pgd_step_size=0.2, seed=12345),
        beta=0.1, start_step=3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg              # and round-trips in the new layout


def test_attack_configs_written_in_the_flat_layout_still_load():
    legacy = json.loads((DATA / "legacy_attack_configs.json").read_text())
    a = AttackConfig.from_dict(legacy["attack_dataset_config"])
    assert a == AttackConfig(features=FeatureConfig(family="ellipse", size=(2, 4), placement="box"),
                             pgd_restarts=3, pgd_steps=4, seed=7)
    s = AttackConfig.from_dict(legacy["robustness_settings"])       # the protocol's AttackSettings
    assert s == AttackConfig(features=FeatureConfig(size=(3, 6)), random_restarts=5, pgd_restarts=2, pgd_steps=3,
                             pgd_step_size=0.1, threshold=0.2, seed=3)


def test_yaml_and_overrides_in_the_old_flat_form(tmp_path):
    p = tmp_path / "old.yaml"
    p.write_text("steps: 5\nrobust:\n  attack: pgd\n  beta: 0.2\n  size: [3, 7]\n  restarts: 2\n")
    cfg = load_config(p)
    assert cfg.robust == RobustConfig(attack=default_attack(method="pgd", size=(3, 7), random_restarts=2,
                                                            pgd_restarts=2), beta=0.2)
    new = tmp_path / "new.yaml"
    new.write_text("steps: 5\nrobust:\n  beta: 0.2\n  attack:\n    method: pgd\n    features: {size: [3, 7]}\n"
                   "    random_restarts: 2\n    pgd_restarts: 2\n")
    assert load_config(new) == cfg
    overrides = dict(parse_override(t) for t in ("robust.attack=pgd", "robust.pgd_steps=5",
                                                  "robust.attack.features.size=[4, 8]"))
    cfg = load_config(None, overrides)
    assert cfg.robust.attack == default_attack(method="pgd", pgd_steps=5, size=(4, 8))
    with pytest.raises(KeyError, match="robust.attack.pgd_stepz"):
        load_config(None, {"robust.attack.pgd_stepz": 3})


def test_every_setting_is_documented_once():
    for cls in (FeatureConfig, AttackConfig, RobustConfig, DemoConfig):
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{cls.__name__} documents no {missing}"


def test_cli_flags_are_built_from_the_fields():
    p = argparse.ArgumentParser()
    add_config_flags(p, AttackConfig, aliases={"pgd_steps": ["--steps"]})
    flags = {a.option_strings[0] for a in p._actions if a.option_strings} - {"-h"}
    want = {"--" + name.replace("_", "-") for name, _ in _leaves(AttackConfig)}
    assert flags == want
    args = p.parse_args(["--size", "3,6", "--family", "ellipse", "--steps", "4", "--method", "pgd",
                         "--normalize", "--intensity", "0.2"])
    cfg = config_from_args(args, AttackConfig)
    assert cfg == AttackConfig(features=FeatureConfig(family="ellipse", size=(3, 6), intensity=(0.2, 0.2)),
                               method="pgd", pgd_steps=4, normalize=True)
    # unset flags keep the base config's values, and the dataclass still validates
    base = AttackConfig(pgd_steps=7, threshold=0.2)
    assert config_from_args(p.parse_args([]), AttackConfig, base) == base
    with pytest.raises(ValueError, match="FeatureConfig.size"):
        config_from_args(p.parse_args(["--size", "6,3"]), AttackConfig)
    with pytest.raises(SystemExit):
        p.parse_args(["--family", "square"])


def test_two_configs_on_one_parser_stay_apart():
    d = DemoConfig()
    p = argparse.ArgumentParser()
    add_config_flags(p, RobustConfig, prefix="robust-", name="robust", defaults=d.robust)
    add_config_flags(p, AttackConfig, prefix="attack-", name="attack", defaults=d.attack)
    args = p.parse_args(["--robust-size", "3,5", "--attack-size", "7", "--robust-beta", "0.5"])
    robust = config_from_args(args, RobustConfig, d.robust, name="robust")
    attack = config_from_args(args, AttackConfig, d.attack, name="attack")
    assert robust == dataclasses.replace(d.robust, beta=0.5, attack=d.robust.attack.replace(size=(3, 5)))
    assert attack == d.attack.replace(size=(7, 7))


def test_from_plain_names_source_and_key():
    with pytest.raises(ValueError, match=r"my.yaml: config key 'features.size' must be a list of 2"):
        from_plain(AttackConfig, {"features": {"size": 3}}, source="my.yaml")
    with pytest.raises(ValueError, match=r"config key 'pgd_steps' must be int"):
        from_plain(AttackConfig, {"pgd_steps": "many"})


def test_a_field_name_shared_by_nested_configs_gets_its_path_in_the_flag():
    @dataclasses.dataclass
    class Outer:
        """Attributes:
            attack: the search.
            chunk: a field of the outer config of the same name as one of the attack's.
        """
        attack: AttackConfig = dataclasses.field(default_factory=AttackConfig)
        chunk: int = 3
    p = argparse.ArgumentParser()
    add_config_flags(p, Outer)
    args = p.parse_args(["--chunk", "5", "--attack-chunk", "7"])
    assert config_from_args(args, Outer) == Outer(attack=AttackConfig(chunk=7), chunk=5)
