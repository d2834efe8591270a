"""Config loading: every bad input is one ConfigError naming the key; overrides go through the same checks."""

import pytest

from metarl.config import Config, ConfigError, config_from_dict, dump_config, load_config


def test_defaults_and_nested_values():
    config = config_from_dict({"seed": 3, "maml": {"fast_lr": 0.05}, "env": {"id": "metarl/HalfCheetahVel-v0"}})
    assert isinstance(config, Config)
    assert config.seed == 3
    assert config.maml.fast_lr == 0.05
    assert config.maml.meta_batch_size == 20  # default kept
    assert config.env.id == "metarl/HalfCheetahVel-v0"


def test_int_is_widened_to_float_but_float_is_not_narrowed_to_int():
    assert config_from_dict({"maml": {"fast_lr": 1}}).maml.fast_lr == 1.0
    with pytest.raises(ConfigError, match="'iterations': expected an integer"):
        config_from_dict({"iterations": 2.5})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sed": 1}, "unknown config key 'sed'"),
        ({"maml": {"fastlr": 0.1}}, "unknown config key 'maml.fastlr'"),
        ({"seed": "one"}, "config key 'seed': expected an integer"),
        ({"maml": {"first_order": "yes"}}, "config key 'maml.first_order': expected true or false"),
        ({"seed": True}, "config key 'seed': expected an integer"),
        ({"device": "tpu"}, "config key 'device': expected one of"),
        ({"sampler": {"backend": "dask"}}, "config key 'sampler.backend'"),
        ({"iterations": 0}, r"config key 'iterations': 0 is out of range \[1, inf\]"),
        ({"trpo": {"max_kl": 0.0}}, r"config key 'trpo.max_kl': 0.0 is out of range \(0, inf\]"),
        ({"advantages": {"gamma": 1.5}}, "config key 'advantages.gamma': 1.5 is out of range"),
        ({"policy": {"hidden_sizes": [64, "x"]}}, r"config key 'policy.hidden_sizes\[1\]'"),
        ({"env": "metarl/Navigation2D-v0"}, "config key 'env': expected a mapping"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_overrides_parse_yaml_and_are_validated():
    config = config_from_dict({}, ["maml.fast_lr=0.2", "policy.hidden_sizes=[32, 32]", "sampler.ray_address=null"])
    assert config.maml.fast_lr == 0.2
    assert config.policy.hidden_sizes == [32, 32]
    assert config.sampler.ray_address is None
    with pytest.raises(ConfigError, match="unknown config key 'maml.nope'"):
        config_from_dict({}, ["maml.nope=1"])
    with pytest.raises(ConfigError, match="not of the form key.sub=value"):
        config_from_dict({}, ["maml.fast_lr"])
    with pytest.raises(ConfigError, match="'seed' is not a mapping"):
        config_from_dict({"seed": 1}, ["seed.x=1"])
    with pytest.raises(ConfigError, match="config key 'seed': expected an integer"):
        config_from_dict({}, ["seed.x=1"])


def test_load_config_round_trips_through_yaml(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("seed: 7\nmaml:\n  meta_batch_size: 4\n")
    config = load_config(path, ["iterations=3"])
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(config))
    assert load_config(again) == config


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(listy)


def test_an_empty_file_and_sizes_below_one_are_refused(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="config file '.*empty.yaml' is empty"):
        load_config(empty)
    with pytest.raises(ConfigError, match=r"'policy.hidden_sizes\[1\]': 0 is out of range \[1, inf\]"):
        config_from_dict({"policy": {"hidden_sizes": [8, 0]}})
