"""One source of defaults: ``[tool.flwr.app.config]`` in pyproject.toml.

Every config dataclass that keeps Python defaults (the run-config sections, the threat
sections, each registered protocol's options) must equal pyproject's value for each key, every
pyproject key must be read by some section, and every table in README.md / docs/*.md with a
"default" column must list pyproject's values. A protocol's default step size (``lr = 0``) is
its strategy class's ``default_lr``, written nowhere else.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from experiments.setup import pyproject_defaults, resolve
from fedrec.config import SECTIONS, RunConfig, protocol_options
from fedrec.errors import ConfigError
from fedrec.threat_config import AttackConfig, DefenceConfig, LdpConfig
from strategies.registry import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
#: threat sections: (dataclass, switch key, the field the switch key sets)
THREATS = ((LdpConfig, "ldp", "mechanism"), (AttackConfig, "attack", "kind"),
           (DefenceConfig, "defence", "kind"))


def key_map(cls: type, prefix: str = "", switch: tuple[str, str] | None = None) -> dict[str, str]:
    """Field name -> run-config key (``local_epochs`` -> ``local-epochs``; a threat section's
    first field is read from its switch key)."""
    out = {f.name: prefix + f.name.replace("_", "-") for f in dataclasses.fields(cls)}
    if switch is not None:
        out[switch[1]] = switch[0]
    return out


def sections() -> list[tuple[str, type, dict[str, str]]]:
    """(label, dataclass, field -> key) of every section that reads the run-config."""
    out = [(cls.__name__, cls, key_map(cls)) for cls in SECTIONS]
    out += [(cls.__name__, cls, key_map(cls, f"{switch}-", (switch, first)))
            for cls, switch, first in THREATS]
    protocols = {(s.options, s.prefix) for s in STRATEGIES.values() if s.options is not None}
    out += [(f"{opts.__name__} ({prefix}*)", opts, key_map(opts, prefix))
            for opts, prefix in sorted(protocols, key=lambda p: p[1])]
    return out


SECTION_CASES = sections()


def test_every_protocol_with_options_is_covered() -> None:
    labels = " ".join(label for label, _, _ in SECTION_CASES)
    for prefix in ("c3drec-", "coda-", "dccl-", "fedncf-", "pfedrec-"):
        assert prefix in labels


@pytest.mark.parametrize(("label", "cls", "keys"), SECTION_CASES, ids=[c[0] for c in SECTION_CASES])
def test_each_python_default_equals_pyproject(label: str, cls: type,
                                              keys: dict[str, str]) -> None:
    flat, hints = pyproject_defaults(), get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = keys[f.name]
        assert key in flat, f"{label}.{f.name}: no key {key!r} in pyproject.toml"
        assert f.default is not dataclasses.MISSING, f"{label}.{f.name} has no default"
        value = flat[key]
        assert type(value) is hints[f.name], (
            f"pyproject {key} = {value!r} is a {type(value).__name__}, {label}.{f.name} "
            f"a {hints[f.name]}")
        assert value == f.default, f"pyproject {key} = {value!r}, {label}.{f.name} = {f.default!r}"


def test_every_pyproject_key_is_read_by_some_section() -> None:
    read = {"strategy"}.union(*(set(keys.values()) for _, _, keys in SECTION_CASES))
    assert sorted(set(pyproject_defaults()) - read) == []
    assert pyproject_defaults()["strategy"] == RunConfig().strategy


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_resolve_parses_each_protocols_options_once_into_cfg_protocol(name: str) -> None:
    cfg, cls = resolve({**pyproject_defaults(), "strategy": name})
    if cls.options is None:
        assert cfg.protocol is None
    else:
        assert cfg.protocol == cls.options()    # pyproject's values are the dataclass defaults
        assert protocol_options(cfg, cls.options) is cfg.protocol
    assert cfg.train.lr == cls.default_lr > 0   # lr = 0: the strategy's own step size


def test_options_of_another_protocol_are_refused() -> None:
    cfg, _ = resolve({**pyproject_defaults(), "strategy": "pfedrec"})
    with pytest.raises(ConfigError, match="reads FedNCFConfig options"):
        protocol_options(cfg, STRATEGIES["fedncf"].options)


def test_the_fedncf_default_lr_is_the_one_its_sgd_results_used() -> None:
    # the SGD runs in the docs used lr 1 with item tables x300 (lr 10 x300 diverges); the
    # ML-1M preset sets Adam and its own lr
    fedncf = STRATEGIES["fedncf"]
    assert fedncf.default_lr == 1.0 and fedncf.options().item_lr_scale == 300.0
    assert tomllib.loads((ROOT / "experiments/fedncf_ml1m.toml").read_text())["lr"] == 0.03


# --------------------------------------------------------------------------- the docs' tables
def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _value(text: str) -> Any:
    """A documented value as TOML reads it (``true``, ``0.0``, ``""``), else the bare word."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def default_rows(text: str) -> list[tuple[int, list[str], list[str]]]:
    """(line number, keys, values) of each row of a table whose second column is "default":
    the backquoted names of the first cell and the backquoted values of the second."""
    rows, in_table = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            in_table = False
            continue
        cells = _cells(line)
        if len(cells) > 1 and cells[1].lower() == "default":
            in_table = True
        elif in_table and not set(cells[0]) <= set("-: "):
            rows.append((n, re.findall(r"`([^`]*)`", cells[0]),
                         re.findall(r"`([^`]*)`", cells[1])))
    return rows


def test_default_rows_are_read_from_a_markdown_table() -> None:
    text = ("| key | default | meaning |\n|---|---|---|\n| `a`, `b-*` | `1.0` | x |\n"
            "| `c`, `d` | `\"\"`, `sgd` | y |\n\nafter\n| `e` | `2` | not a default table |\n")
    assert default_rows(text) == [(3, ["a", "b-*"], ["1.0"]), (4, ["c", "d"], ['""', "sgd"])]


def test_documented_defaults_equal_pyproject() -> None:
    flat, checked, bad = pyproject_defaults(), 0, []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line, names, values in default_rows(path.read_text()):
            keys = [k for k in names if k in flat]   # "ldp-*" families name no single key
            if not values or len(values) != len(keys):
                continue
            for key, text in zip(keys, values, strict=True):
                checked += 1
                if _value(text) != flat[key]:
                    bad.append(f"{path.name}:{line}: {key} = {text}, pyproject {flat[key]!r}")
    assert not bad, "documented defaults differ from pyproject.toml:\n" + "\n".join(bad)
    assert checked >= 30     # the Run options table is found


def test_documented_default_lrs_are_the_strategies_default_lr() -> None:
    # prose such as "0 = the strategy's default (FedMF/FedAvg 10, PFedRec 0.1)" in the lr row
    by_title = {cls.__name__.lower(): cls.default_lr for cls in STRATEGIES.values()}
    bad = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in path.read_text().splitlines():
            cells = _cells(line) if line.startswith("|") else []
            if len(cells) < 3 or cells[0] != "`lr`":
                continue
            for names, number in re.findall(r"((?:[A-Za-z0-9]+/)*[A-Za-z0-9]+) (\d+(?:\.\d+)?)",
                                            cells[2]):
                for name in names.split("/"):
                    if name.lower() in by_title and by_title[name.lower()] != float(number):
                        bad.append(f"{path.name}: {name} {number}, but its default_lr is "
                                   f"{by_title[name.lower()]:g}")
    assert not bad, "\n".join(bad)
