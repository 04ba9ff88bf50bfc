"""Tests for metarl.common.config (through the experiment tree of metarl.experiment): loading, overrides, error messages, round trips, documentation."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import yaml

from metarl.algos.maml import MAMLConfig
from metarl.common import config as generic
from metarl.common.config import (
    ConfigError,
    ConfigRangeError,
    config_keys,
    config_to_dict,
    describe,
    dump_yaml,
    field_docs,
    get_by_path,
    parse_override,
    set_by_path,
    validate_config,
)
from metarl.evaluation.config import EvalConfig
from metarl.experiment import ExperimentConfig, config_from_dict, load_config
from metarl.sampling.config import CollectorConfig


def write(tmp_path, text: str, name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "config errors are one line"
    return message


# ---------------------------------------------------------------- loading and merging


def test_defaults_load_without_a_file():
    cfg = load_config(None)
    assert cfg == ExperimentConfig()
    assert cfg.algo == "maml" and cfg.seed == 0
    assert cfg.policy.hidden_sizes == (100, 100)
    assert cfg.maml.max_kl == 0.01 and cfg.maml.outer == "trpo"
    assert cfg.env.kwargs == {} and cfg.env.horizon is None
    assert cfg.eval.seed == 1000


def test_yaml_then_overrides(tmp_path):
    path = write(
        tmp_path,
        "algo: maml\n"
        "seed: 7\n"
        "env:\n  id: metarl/HalfCheetahVel-v0\n  kwargs: {ctrl_cost: 0.1}\n  horizon: 200\n"
        "maml:\n  inner_lr: 1e-2\n  meta_batch_size: 40\n",
    )
    cfg = load_config(path, ["maml.inner_lr=0.05", "seed=3", "collector.num_threads=2"])
    assert cfg.seed == 3  # override beats file
    assert cfg.env.id == "metarl/HalfCheetahVel-v0" and cfg.env.horizon == 200
    assert cfg.env.kwargs == {"ctrl_cost": 0.1}
    assert cfg.maml.inner_lr == 0.05 and cfg.maml.meta_batch_size == 40
    assert cfg.maml.episodes_per_task == 20  # untouched keys keep their defaults
    assert cfg.collector.num_threads == 2


def test_override_values_are_yaml():
    cfg = load_config(
        None,
        [
            "maml.outer_lr=1e-3",  # YAML 1.1 would read this as a string
            "maml.cg_damping=1E-4",
            "train.show_progress=false",
            "policy.hidden_sizes=[64, 64]",
            "eval.inner_lr=0.1",
            "eval.inner_lr=null",
            "maml.inner_lr=1",  # an int is accepted for a float field
            "env.kwargs.goal.velocity=1.5",  # keys below a free-form mapping field
            "maml={outer: adam, first_order: true}",  # a mapping updates part of a section
        ],
    )
    assert cfg.maml.outer_lr == 1e-3 and isinstance(cfg.maml.outer_lr, float)
    assert cfg.maml.cg_damping == 1e-4
    assert cfg.train.show_progress is False
    assert cfg.policy.hidden_sizes == (64, 64)
    assert cfg.eval.inner_lr is None
    assert cfg.maml.inner_lr == 1.0 and isinstance(cfg.maml.inner_lr, float)
    assert cfg.env.kwargs == {"goal": {"velocity": 1.5}}
    assert cfg.maml.outer == "adam" and cfg.maml.first_order is True
    assert cfg.maml.max_kl == 0.01


def test_override_for_a_string_field_keeps_the_literal_text():
    cfg = load_config(None, ["env.id=123", "collector.address=auto", "collector.device=cuda:0"])
    assert cfg.env.id == "123"
    assert cfg.collector.address == "auto" and cfg.collector.device == "cuda:0"


def test_custom_yaml_dialect_does_not_leak_into_pyyaml():
    assert yaml.safe_load("1e-3") == "1e-3"


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "# only a comment\n")) == ExperimentConfig()


def test_parse_override():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override(" seed = 5") == ("seed", 5)
    assert parse_override("env.id=a=b") == ("env.id", "a=b")


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    assert error_of(missing) == f"config file not found: {missing}"


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "seed: 1\nmaml:\n  inner_lr: 0.1\n   outer: adam\n")
    message = error_of(path)
    assert message.startswith(f"malformed YAML in {path} at line 4")


def test_duplicate_yaml_key(tmp_path):
    path = write(tmp_path, "seed: 1\nseed: 2\n")
    assert re.fullmatch(rf"malformed YAML in {re.escape(path)} at line 2.*duplicate key 'seed'", error_of(path))


def test_top_level_must_be_a_mapping(tmp_path):
    message = error_of(write(tmp_path, "- seed\n- 1\n"))
    assert "must hold a mapping" in message and "got list" in message


def test_unknown_key_suggests_the_nearest(tmp_path):
    assert error_of(None, ["maml.inner_lrr=0.1"]) == (
        "unknown config key 'maml.inner_lrr'; did you mean 'maml.inner_lr'?"
    )
    path = write(tmp_path, "maml:\n  inner_lrr: 0.1\n")
    assert error_of(path) == "unknown config key 'maml.inner_lrr'; did you mean 'maml.inner_lr'?"


def test_unknown_key_in_the_wrong_section_points_to_the_right_one():
    message = error_of(None, ["max_kl=0.1"])
    assert message == "unknown config key 'max_kl'; did you mean 'maml.max_kl'?"


def test_unknown_key_without_close_match_lists_the_level():
    message = error_of(None, ["collector.zzzzz=1"])
    assert message.startswith("unknown config key 'collector.zzzzz'; valid keys in 'collector': ")
    for name in ("backend", "num_threads", "device", "num_workers", "address"):
        assert name in message
    message = error_of(None, ["qqqqqq=1"])
    assert "valid keys at the top level: algo, seed, env, policy, maml" in message


def test_key_below_a_leaf():
    assert "'maml.inner_lr' is a float, not a section" in error_of(None, ["maml.inner_lr.x=1"])


def test_wrong_type():
    assert error_of(None, ["maml.inner_lr=abc"]) == "maml.inner_lr: expected a float, got 'abc' (str)"
    assert error_of(None, ["train.iterations=2.5"]) == (
        "train.iterations: expected an int, got 2.5 (float)"
    )
    assert error_of(None, ["eval.episodes_per_task=x"]) == (
        "eval.episodes_per_task: expected an int or null, got 'x' (str)"
    )
    assert error_of(None, ["maml.first_order=1"]) == "maml.first_order: expected a bool, got 1 (int)"
    assert error_of(None, ["env.kwargs=[1]"]).startswith("env.kwargs: expected a mapping")
    assert error_of(None, ["maml=3"]) == (
        "maml: expected a mapping (the MAMLConfig section), got 3 (int)"
    )


def test_bool_is_not_a_number():
    assert error_of(None, ["train.iterations=true"]) == (
        "train.iterations: expected an int, got True (bool)"
    )
    assert error_of(None, ["maml.inner_lr=false"]) == (
        "maml.inner_lr: expected a float, got False (bool)"
    )


def test_literal_lists_the_choices():
    assert error_of(None, ["algo=mamll"]) == (
        "algo: expected one of 'maml', 'promp', 'rl2', 'pearl', 'pretrain', 'oracle', got 'mamll' (str); "
        "did you mean 'maml'?"
    )
    message = error_of(None, ["collector.backend=cuda"])
    assert "expected one of 'auto', 'native', 'gym'" in message


def test_wrong_type_in_file(tmp_path):
    path = write(tmp_path, "policy:\n  hidden_sizes: [64, x]\n")
    assert error_of(path) == (
        "policy.hidden_sizes: expected a list of ints, got [64, 'x'] (list)"
    )


@pytest.mark.parametrize("bad", ["foo", "=3", "", "--set"])
def test_bad_override_syntax(bad):
    assert error_of(None, [bad]) == f"--set expects key=value, got {bad!r}"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("maml.inner_lr=-0.1", "maml.inner_lr = -0.1 is out of range: must be > 0"),
        ("maml.max_kl=0", "maml.max_kl = 0.0 is out of range: must be > 0"),
        ("maml.episodes_per_task=0", "maml.episodes_per_task = 0 is out of range: must be >= 1"),
        ("maml.meta_batch_size=0", "maml.meta_batch_size = 0 is out of range: must be >= 1"),
        ("maml.gamma=1.5", "maml.gamma = 1.5 is out of range: must be in (0, 1]"),
        ("maml.ls_backtrack_ratio=1", "maml.ls_backtrack_ratio = 1.0 is out of range: must be in (0, 1)"),
        ("maml.gae_lambda=-0.5", "maml.gae_lambda = -0.5 is out of range: must be in [0, 1]"),
        ("rl2.clip_range=0", "rl2.clip_range = 0.0 is out of range: must be > 0"),
        ("rl2.minibatches=8", "rl2.minibatches = 8 is out of range: must be <= trials_per_iteration (4)"),
        ("eval.inner_lr=0", "eval.inner_lr = 0.0 is out of range: must be > 0"),
        ("train.log_every=0", "train.log_every = 0 is out of range: must be >= 1"),
        ("env.horizon=0", "env.horizon = 0 is out of range: must be >= 1"),
        ("policy.hidden_sizes=[64, 0]", "policy.hidden_sizes = (64, 0) is out of range"),
        ("seed=-1", "seed = -1 is out of range: must be >= 0"),
    ],
)
def test_range_errors(override, expected):
    overrides = ["rl2.trials_per_iteration=4", override]
    with pytest.raises(ConfigRangeError) as info:
        load_config(None, overrides)
    assert str(info.value).startswith(expected)


def test_range_checked_after_all_overrides():
    # An intermediate out-of-range state is fine if the final config is valid.
    cfg = load_config(None, ["rl2.minibatches=200", "rl2.trials_per_iteration=400"])
    assert cfg.rl2.minibatches == 200


def test_range_errors_from_config_from_dict():
    with pytest.raises(ConfigError, match=r"^maml\.max_kl = -1\.0 is out of range"):
        config_from_dict({"maml": {"max_kl": -1}})
    # validate=False builds it anyway (e.g. to report several problems at once).
    assert config_from_dict({"maml": {"max_kl": -1}}, validate=False).maml.max_kl == -1.0


# ---------------------------------------------------------------- round trips


def _non_default_config() -> ExperimentConfig:
    return load_config(
        None,
        [
            "algo=rl2",
            "seed=12",
            "env.kwargs={goals: [[0.5, -0.5], [1, 1]], name: x}",
            "env.horizon=100",
            "policy.hidden_sizes=[40, 40, 40]",
            "maml.cg_damping=1e-7",
            "collector.address=auto",
            "eval.inner_lr_after_first=0.05",
        ],
    )


@pytest.mark.parametrize("make", [ExperimentConfig, _non_default_config])
def test_dict_round_trip_is_exact(make):
    cfg = make()
    d = config_to_dict(cfg)
    assert isinstance(d["policy"]["hidden_sizes"], list)  # tuples become lists
    assert yaml.safe_load(yaml.safe_dump(d)) == d  # YAML-safe
    back = config_from_dict(d)
    assert back == cfg
    assert isinstance(back.policy.hidden_sizes, tuple)


@pytest.mark.parametrize("make", [ExperimentConfig, _non_default_config])
def test_yaml_round_trip_is_exact(tmp_path, make):
    cfg = make()
    text = dump_yaml(cfg)
    assert load_config(write(tmp_path, text)) == cfg
    assert yaml.safe_load(text) == config_to_dict(cfg)


def test_tuple_fields_convert_lists(tmp_path):
    cfg = load_config(write(tmp_path, "policy:\n  hidden_sizes: [32]\n"))
    assert cfg.policy.hidden_sizes == (32,)
    assert load_config(write(tmp_path, "policy:\n  hidden_sizes: []\n")).policy.hidden_sizes == ()


# ---------------------------------------------------------------- paths


def test_set_by_path_returns_a_copy():
    cfg = ExperimentConfig()
    new = set_by_path(cfg, "maml.inner_lr", 0.5)
    assert new.maml.inner_lr == 0.5 and cfg.maml.inner_lr == 0.1
    assert new.policy == cfg.policy
    kw = set_by_path(cfg, "env.kwargs.a", 1)
    assert kw.env.kwargs == {"a": 1} and cfg.env.kwargs == {}
    with pytest.raises(ConfigError, match="did you mean 'maml.inner_lr'"):
        set_by_path(cfg, "maml.inner_lrr", 0.5)
    with pytest.raises(ConfigError, match="expected a float"):
        set_by_path(cfg, "maml.inner_lr", "x")


def test_get_by_path():
    cfg = _non_default_config()
    assert get_by_path(cfg, "policy.hidden_sizes") == (40, 40, 40)
    assert get_by_path(cfg, "env.kwargs.name") == "x"
    with pytest.raises(ConfigError, match="did you mean 'eval.steps'"):
        get_by_path(cfg, "eval.stepz")


# ---------------------------------------------------------------- documentation


def test_every_field_in_the_tree_has_a_doc():
    def walk(cls, prefix=""):
        docs = field_docs(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert docs.get(f.name, "").strip(), f"{prefix}{f.name} has no docstring"
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")

    walk(ExperimentConfig)


def test_field_docs_reads_attribute_docstrings():
    docs = field_docs(MAMLConfig)
    assert docs["learn_inner_lr"].startswith("Meta-SGD: learn a per-parameter inner learning rate")
    assert "native batched" in field_docs(CollectorConfig)["backend"]
    assert "0.05" in field_docs(EvalConfig)["inner_lr_after_first"]


def test_describe_shows_every_key_value_and_doc():
    cfg = _non_default_config()
    text = describe(cfg)
    assert yaml.safe_load(text) == config_to_dict(cfg)  # the description is itself the config
    lines = text.splitlines()
    section_start = {"": 0}
    for key in config_keys(ExperimentConfig, sections=True):
        parts = key.split(".")
        section = ".".join(parts[:-1])
        owner = ExperimentConfig
        for part in parts[:-1]:
            owner = typing.get_type_hints(owner)[part]
        doc = field_docs(owner)[parts[-1]]
        indent = "  " * (len(parts) - 1)
        # Search from the start of the key's own section: `gamma` appears in maml and rl2.
        index = next(
            i
            for i in range(section_start[section], len(lines))
            if lines[i].startswith(f"{indent}{parts[-1]}:")
        )
        section_start[key] = index
        assert lines[index - 1] == f"{indent}# {doc}", key  # the doc sits right above its key
    assert "  hidden_sizes: [40, 40, 40]" in lines
    assert "  address: auto" in lines


def test_config_keys():
    keys = config_keys(ExperimentConfig)
    assert keys[:3] == ["algo", "seed", "env.id"]
    assert "maml.inner_lr" in keys and "maml" not in keys
    assert "maml" in config_keys(ExperimentConfig, sections=True)


# ---------------------------------------------------------------- the machinery on another tree


@dataclass
class _Inner:
    scale: tuple[float, float] = (1.0, 2.0)
    """A fixed-length pair."""
    names: list[str] = field(default_factory=list)
    """Some names."""
    mode: Optional[Literal["a", "b"]] = None
    """An optional choice."""

    def validate(self) -> None:
        if self.scale[0] > self.scale[1]:
            raise ConfigError("scale must be increasing")


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    """A section."""
    rate: float = 0.5
    """No docstring follows the next field on purpose."""
    undocumented: int = 1


def test_generic_tree():
    cfg = generic.config_from_dict({"inner": {"scale": [0, 3], "names": ["x"], "mode": "b"}}, _Outer)
    assert cfg.inner == _Inner(scale=(0.0, 3.0), names=["x"], mode="b")
    assert generic.config_from_dict(config_to_dict(cfg), _Outer) == cfg
    assert field_docs(_Outer) == {"inner": "A section.", "rate": "No docstring follows the next field on purpose."}
    with pytest.raises(ConfigError, match=r"^inner\.scale: expected a list of 2 values, got \[1\]"):
        generic.load_config(None, ["inner.scale=[1]"], base=_Outer)
    with pytest.raises(ConfigError, match=r"^inner\.mode: expected one of 'a', 'b' or null, got 'c'"):
        generic.load_config(None, ["inner.mode=c"], base=_Outer)
    with pytest.raises(ConfigError, match=r"^inner: scale must be increasing$"):
        validate_config(set_by_path(_Outer(), "inner.scale", [2, 1]))
    assert "(undocumented)" in describe(_Outer())
