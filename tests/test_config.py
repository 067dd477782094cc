"""fedrec.config: flat run-config -> frozen dataclasses; coercion and one-line errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from fedrec.config import (
    DataConfig,
    OutputConfig,
    RunConfig,
    SimConfig,
    TrainConfig,
    parse_run_config,
    parse_section,
    section_keys,
)
from fedrec.errors import ConfigError


def test_empty_config_gives_the_dataclass_defaults():
    cfg = parse_run_config({})
    assert cfg == RunConfig() and cfg.strategy == "fedmf" and cfg.raw == ()
    assert cfg.train.num_rounds == 20 and cfg.sim.devices_per_client == 64


def test_kebab_keys_map_to_fields_and_seed_feeds_data_and_train():
    cfg = parse_run_config({"local-epochs": 3, "devices-per-client": 8, "seed": 7,
                            "run-name": "x", "eval-protocol": "full"})
    assert cfg.train.local_epochs == 3 and cfg.sim.devices_per_client == 8
    assert cfg.data.seed == 7 and cfg.train.seed == 7
    assert cfg.output.run_name == "x" and cfg.data.eval_protocol == "full"
    assert cfg.raw_dict() == {"local-epochs": 3, "devices-per-client": 8, "seed": 7,
                              "run-name": "x", "eval-protocol": "full"}


@pytest.mark.parametrize(("key", "given", "want"), [
    ("num-rounds", "3", 3), ("num-rounds", 4.0, 4), ("lr", "0.5", 0.5), ("lr", 2, 2.0),
    ("simulate-dropouts", "true", True), ("simulate-dropouts", "False", False),
    ("simulate-dropouts", "0", False), ("simulate-dropouts", 1, True), ("model", 5, "5"),
])
def test_values_are_coerced_to_the_field_type(key, given, want):
    flat = parse_run_config({key: given}).raw_dict()
    assert flat == {key: given}
    section = {"num-rounds": "train", "lr": "train", "model": "train",
               "simulate-dropouts": "sim"}[key]
    got = getattr(getattr(parse_run_config({key: given}), section), key.replace("-", "_"))
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(("key", "given", "message"), [
    ("num-rounds", 2.5, ("run-config 'num-rounds' = 2.5 is not a valid int; "
                         "pass e.g. --set num-rounds=<int>")),
    ("num-rounds", "many", "run-config 'num-rounds' = 'many' is not a valid int"),
    ("lr", "fast", "run-config 'lr' = 'fast' is not a valid float; pass e.g. --set lr=<float>"),
    ("quiet", "yes", "run-config 'quiet' = 'yes' is not a valid bool"),
])
def test_bad_values_name_the_key_and_the_fix(key, given, message):
    with pytest.raises(ConfigError) as err:
        parse_run_config({key: given})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_unknown_keys_are_named_sorted_with_the_closest_valid_keys():
    with pytest.raises(ConfigError) as err:
        parse_run_config({"zeta": 1, "num-round": 5, "lr": 0.1})
    assert str(err.value) == ("unknown run-config key(s) num-round, zeta; did you mean "
                              "num-rounds? (all keys: README.md, 'Run options')")
    with pytest.raises(ConfigError) as err:
        parse_run_config({"qqqqqq": 1})
    assert str(err.value) == ("unknown run-config key(s) qqqqqq; the valid keys are listed in "
                              "README.md, 'Run options'")


def test_extra_keys_and_prefixed_families_are_accepted():
    cfg = parse_run_config({"pfedrec-lr-eta": 80.0, "attack": "none"},
                           extra_keys={"pfedrec-*", "attack"})
    assert cfg.raw_dict() == {"attack": "none", "pfedrec-lr-eta": 80.0}
    with pytest.raises(ConfigError, match="unknown run-config key"):
        parse_run_config({"pfedrecx": 1}, extra_keys={"pfedrec-*"})


@pytest.mark.parametrize(("flat", "message"), [
    ({"eval-protocol": "top"}, "eval-protocol = 'top'; use 'sampled' or 'full'"),
    ({"eval-negatives": 0}, "eval-negatives must be >= 1"),
    ({"max-devices": -1}, "max-devices must be >= 0 (0 = all users)"),
    ({"min-user-interactions": 2}, "min-user-interactions must be >= 3"),
    ({"num-rounds": 0}, "num-rounds must be >= 1"),
    ({"fraction-fit": 1.5}, "fraction-fit must be in (0, 1]"),
    ({"fraction-fit": 0.0}, "fraction-fit must be in (0, 1]"),
    ({"server-lr": 0.0}, "lr must be >= 0 (0 = the strategy's default) and server-lr > 0"),
    ({"devices-per-client": 0}, "devices-per-client must be >= 1"),
    ({"eval-every": -1}, "eval-every must be >= 0"),
    ({"eval-fraction": 0.0}, "eval-fraction must be in (0, 1]"),
    ({"seed": -1}, "seed = -1 is out of range; pass --set seed=<an int from 0 to 4294967295>"),
    ({"seed": 2**63}, f"seed = {2**63} is out of range; pass --set seed=<an int from 0 to "),
    ({"seed": 2**32}, f"seed = {2**32} is out of range"),
    ({"dataset": ""}, "dataset is empty; pass --set dataset=<a preset such as synthetic"),
    ({"dataset": "  "}, "dataset is empty"),
    ({"flower-clients": -1}, "flower-clients must be >= 0 (0 = one per shard)"),
    ({"synthetic-users": -1}, "synthetic-users must be >= 0 (0 = the size's own)"),
    ({"round-timeout-s": -0.5}, "round-timeout-s must be >= 0 seconds (0 = no timeout)"),
    ({"device-mix": "pixel9:1"}, ("device-mix: unknown device tier 'pixel9' in 'pixel9:1'; "
                                  "valid tiers: highend, iphone8plus, lowend, pixel2")),
    ({"device-mix": "pixel2:0"}, ("device-mix: weight of tier 'pixel2' must be a positive number, "
                                  "got 0; write e.g. pixel2:1 (valid tiers: highend, ")),
    ({"run-name": "../x"}, ("run-name = '../x' must be a folder name inside output-dir (no '/', "
                            "'\\' or '..'); pass e.g. --set run-name=my-run")),
    ({"run-name": "/abs/x"}, "run-name = '/abs/x' must be a folder name inside output-dir"),
    ({"run-name": ".."}, "run-name = '..' must be a folder name inside output-dir"),
    ({"run-name": "a\\b"}, "run-name = 'a\\\\b' must be a folder name inside output-dir"),
])
def test_range_checks_are_one_line_errors(flat, message):
    with pytest.raises(ConfigError) as err:
        parse_run_config(flat)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_edge_values_that_are_accepted():
    cfg = parse_run_config({"seed": 2**32 - 1, "run-name": "a..b", "round-timeout-s": 0.0,
                            "device-mix": "highend"})
    assert (cfg.data.seed, cfg.train.seed, cfg.output.run_name) == (2**32 - 1, 2**32 - 1, "a..b")


def test_synthetic_users_sets_the_population_of_the_generator():
    from fedrec.federated import load_for_run

    ds = load_for_run(parse_run_config({"synthetic-size": "tiny", "synthetic-users": 45}).data)
    assert ds.interactions["user"].nunique() == 45
    default = load_for_run(parse_run_config({"synthetic-size": "tiny"}).data)
    assert default.interactions["user"].nunique() == 30


def test_parse_section_with_a_prefix_reads_only_its_keys():
    @dataclass(frozen=True)
    class Extra:
        lr_eta: float = 1.0
        vectorised: bool = True

    got = parse_section(Extra, {"x-lr-eta": "80", "x-vectorised": "false", "lr-eta": 5}, "x-")
    assert got == Extra(lr_eta=80.0, vectorised=False)
    assert section_keys(Extra, "x-") == {"x-lr-eta", "x-vectorised"}


def test_sections_are_frozen():
    cfg = parse_run_config({})
    for section in (cfg.data, cfg.train, cfg.sim, cfg.output):
        assert isinstance(section, (DataConfig, TrainConfig, SimConfig, OutputConfig))
        with pytest.raises(dataclasses.FrozenInstanceError):
            section.seed = 1  # type: ignore[misc]


def test_a_protocols_options_are_parsed_into_cfg_protocol() -> None:
    from clients.pfedrec_device import PFedRecConfig

    cfg = parse_run_config({"pfedrec-lr-eta": "3", "lr": 0.5}, options=PFedRecConfig,
                           prefix="pfedrec-")
    assert cfg.protocol == PFedRecConfig(lr_eta=3.0) and cfg.train.lr == 0.5
    assert parse_run_config({}).protocol is None
    with pytest.raises(ConfigError, match="pfedrec-lr-etta"):
        parse_run_config({"pfedrec-lr-etta": 3}, options=PFedRecConfig, prefix="pfedrec-")
    with pytest.raises(ConfigError, match="pfedrec-lr-eta must be > 0"):
        parse_run_config({"pfedrec-lr-eta": 0}, options=PFedRecConfig, prefix="pfedrec-")
