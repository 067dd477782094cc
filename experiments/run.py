"""The documented way to run fedrec: validate the config, run it on Flower, exit by the result.

Usage::

    python -m experiments.run [--run-config FILE.toml] [--set key=value ...]
                              [--engine flwr|inprocess] [--num-supernodes N]

Exit status: 0 when the run's ``summary.json`` says ``finished``; 1 when the run failed or
did not finish (its one-line error is printed); 2 on bad input (unknown key, unknown
strategy or dataset, missing file), reported as one ``error: ...`` line on stderr *before*
Flower starts, so no run directory is left behind; 130 when interrupted (Ctrl-C or
SIGTERM: the Flower processes are stopped, the finished rounds stay). The run directory is
printed at the end.

Config = ``[tool.flwr.app.config]`` defaults < ``--run-config`` file < ``--set`` pairs.
``--set`` values are TOML scalars (``lr=0.05``, ``quiet=true``); anything that is not valid
TOML is taken as a string (``dataset=ml-1m``). ``output-dir``, ``data-root`` and a dataset
given as a relative path are made absolute against the caller's working directory (the
Flower processes run elsewhere), and a ``run-name`` is generated when none is given.

Engines (experiments/flower_engine.py)
--------------------------------------
``flwr`` (default) runs ``flwr run <app copy> <connection> --stream --run-config <file>
--federation-config "num-supernodes=N client-resources-num-cpus=1"``. What we found with
flwr 1.41.0 (see also ../shared/docs/flower-1.41.md):

* ``flwr run`` with the default connection (address ``:local:``) lazily starts a detached
  ``flower-superlink --simulation`` on 127.0.0.1:39091, with the CLI's environment and
  working directory, and leaves it running; no flwr command stops it, and a SuperLink that
  someone else started without ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` would be
  reused silently (runtime ``uv sync`` -> CUDA torch download).
* So experiments.run starts its OWN SuperLink per invocation: ``flower-superlink --insecure
  --simulation --disable-runtime-dependency-installation --host 127.0.0.1 --port <free
  port>`` (one HTTP port serves the Runtime, Control and Fleet APIs; in-memory state), in a
  new session, from an empty working directory, with ``FLWR_HOME`` = a fresh
  ``<repo>/.flwr/<run-name>-<pid>/`` holding a ``config.toml`` whose connection names that
  address. A connection with an explicit address is "user-managed": ``flwr run`` uses it
  and starts nothing. When the run ends (or fails, or Ctrl-C/SIGTERM), the process groups
  of the SuperLink and of all its descendants get SIGTERM, then SIGKILL after at most 10 s,
  and the per-invocation ``FLWR_HOME`` is deleted. Killing the SuperLink's group alone is
  not enough: the SuperExec runs in a session of its own, and the ``flwr-simulation``
  process and Ray (raylet, gcs_server, actors) in that session; after an interrupted run
  they kept running (a Ray actor ignored SIGTERM). Nothing keeps running; concurrent
  invocations do not share ports or config files. The SuperLink's log is kept as
  ``<run dir>/superlink.log``.
* The simulation size is per run: ``--federation-config "num-supernodes=N
  client-resources-num-cpus=1"`` (``flwr federation simulation-config`` stores it in the
  SuperLink, which is lost with it). N = ceil(n_devices / devices-per-client): each Flower
  client hosts one shard of devices; n_devices is known only after the data is prepared
  (k-core filtering, ``max-devices``), so we prepare it once here (it is also the
  validation; ~0.1 s synthetic, ~1.5 s ML-1M from the parse cache).
* ``flwr run --stream`` exits 0 even when the ServerApp crashes: the exit status comes from
  ``summary.json`` written by the ServerApp (experiments/server_app.py).
* The app travels as a FAB: ``*.py *.toml *.md *.json ...`` of the repo, without
  ``test_*.py`` files and ``.flwr/``; it is installed under ``$FLWR_HOME/apps`` and
  imported from there, so relative paths would resolve against the wrong folder. To build
  it, ``flwr run <dir>`` walks and resolves every file under ``<dir>``, ``.venv`` included
  (~42,000 files: 5-25 s per run here, before anything starts); we pass a copy of the
  files a FAB may hold instead (``stage_app``: 0.05 s), and flwr still applies
  ``.gitignore`` and its FAB rules to it.

``inprocess`` calls ``flwr.simulation.run_simulation`` with ``make_server_app(config)`` and
``make_client_fn(config)`` in this process (no SuperLink, no FAB; ~10 s faster to start,
used by tests and benchmarks; it is also the only engine that can import strategies
defined in ``test_*.py`` files).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from experiments.flower_engine import REPO, run_flwr, run_inprocess
from experiments.setup import effective_config, resolve, run_dir_for
from fedrec.data.registry import PRESETS, resolve_data_root
from fedrec.errors import ConfigError, FedrecError
from fedrec.results import RunRecorder


# --------------------------------------------------------------------------- config
def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML scalar (``0.1``, ``true``, ``"x"``) or else a plain string."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    return text if isinstance(value, (dict, list)) else value


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: parsed v}``; later pairs win."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r} is not key=value; write e.g. --set num-rounds=5")
        out[key.strip()] = parse_value(value.strip())
    return out


def read_run_config(path: str | Path) -> dict[str, Any]:
    """A flat run-config TOML file (``key = value`` lines, like ``flwr run --run-config``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"run-config file {path} not found; pass an existing .toml file "
                          "(presets are in experiments/*.toml)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"run-config file {path} is not valid TOML ({exc}); "
                          "write one 'key = value' per line") from None
    tables = sorted(k for k, v in data.items() if isinstance(v, (dict, list)))
    if tables:
        raise ConfigError(f"run-config file {path}: {', '.join(tables)} must be scalars; "
                          "write flat 'key = value' lines")
    return data


def absolutize(flat: Mapping[str, Any], cwd: Path) -> dict[str, Any]:
    """Make output-dir, data-root and a relative dataset path absolute against ``cwd``; an
    empty data-root becomes the root found here ($FEDREC_DATA or ../shared/data)."""
    out = dict(flat)
    out["output-dir"] = str((cwd / Path(str(out["output-dir"])).expanduser()).resolve())
    if out.get("data-root"):
        out["data-root"] = str((cwd / Path(str(out["data-root"])).expanduser()).resolve())
    name = str(out.get("dataset", ""))
    dataset = Path(name).expanduser()
    if name not in PRESETS and not name.startswith("synthetic") and not dataset.is_absolute() \
            and name and (cwd / dataset).exists():
        out["dataset"] = str((cwd / dataset).resolve())
    if not out.get("data-root") and not name.startswith("synthetic"):
        # the default root (<repo>/../shared/data) means nothing inside the installed FAB
        with contextlib.suppress(FedrecError):
            out["data-root"] = str(resolve_data_root(None).resolve())
    return out


def make_run_name(strategy: str, dataset: str, now: datetime) -> str:
    """``<strategy>-<dataset>-<UTC time>``, with path separators and odd characters as ``_``."""
    base = f"{strategy.replace(':', '.')}-{Path(dataset).name or dataset}"
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', base)}-{now:%Y%m%dT%H%M%S}"


def unique_name(output_dir: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``... whichever does not exist yet under output_dir."""
    candidate, i = name, 1
    while (output_dir / candidate).exists():
        i += 1
        candidate = f"{name}-{i}"
    return candidate


def build_overrides(run_config: str | None, sets: list[str], cwd: Path,
                    now: datetime) -> dict[str, Any]:
    """The run's overrides of the pyproject defaults, with absolute paths and a run-name."""
    given = {**(read_run_config(run_config) if run_config else {}), **parse_sets(sets)}
    full = effective_config({}, given)
    paths = absolutize(full, cwd)
    given.update({k: v for k, v in paths.items() if v != full.get(k) or k == "output-dir"})
    if not given.get("run-name"):
        name = make_run_name(str(paths["strategy"]), str(paths["dataset"]), now)
        given["run-name"] = unique_name(Path(given["output-dir"]), name)
    return given


def validate(overrides: Mapping[str, Any]) -> tuple[Path, int]:
    """Parse the config and build the strategy and device logic once (no files written).

    Returns (run directory, number of devices). Raises FedrecError on bad input.
    """
    cfg, cls = resolve(effective_config({}, overrides))
    run_dir = run_dir_for(cfg)
    if run_dir.exists():
        raise ConfigError(f"run directory {run_dir} already exists; pass another run-name "
                          "(or none, to get a fresh one)")
    fed = cls.prepare_data(cfg)
    cls(cfg=cfg, fed=fed, recorder=RunRecorder(run_dir))  # builds the cloud model
    cls.device_cls(cfg, fed)                               # and the on-device logic
    return run_dir, int(fed.n_devices)


def num_supernodes(n_devices: int, devices_per_client: int) -> int:
    """Flower clients needed so every shard of devices has its own: ceil(n / per-client)."""
    return max(1, math.ceil(n_devices / devices_per_client))


ENGINES = {"flwr": run_flwr, "inprocess": run_inprocess}


# --------------------------------------------------------------------------- outcome
def outcome(run_dir: Path) -> tuple[int, str]:
    """(exit status, one line) from the run directory's summary.json."""
    path = run_dir / "summary.json"
    if not path.is_file():
        hint = f"; see {run_dir / 'superlink.log'}" if (run_dir / "superlink.log").exists() else ""
        return 1, f"error: the run wrote no summary.json in {run_dir}{hint}"
    summary = json.loads(path.read_text())
    status = summary.get("status")
    if status == "finished":
        return 0, f"finished {summary.get('rounds')} rounds in {summary.get('wall_s', 0):.1f} s"
    rounds = run_dir / "rounds.jsonl"
    done = summary.get("rounds_completed",
                       len(rounds.read_text().splitlines()) if rounds.is_file() else 0)
    reason = summary.get("error") or "the run stopped before its last round"
    return 1, f"error: run {status} after {done} round(s): {reason}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.split("\n")[0])
    p.add_argument("--run-config", metavar="FILE.toml", help="flat TOML of run-config keys")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one run-config key (repeatable)")
    p.add_argument("--engine", choices=sorted(ENGINES), default="flwr")
    p.add_argument("--num-supernodes", type=int, default=0,
                   help="Flower clients (default: ceil(devices / devices-per-client))")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(REPO) not in sys.path:  # plug-in modules in the project folder, as in the FAB
        sys.path.insert(0, str(REPO))
    try:
        overrides = build_overrides(args.run_config, args.sets, Path.cwd(),
                                    datetime.now(UTC))
        run_dir, n_devices = validate(overrides)
    except FedrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    per_client = int(resolve(effective_config({}, overrides))[0].sim.devices_per_client)
    n = args.num_supernodes or num_supernodes(n_devices, per_client)
    print(f"fedrec: {n_devices} devices on {n} Flower clients ({args.engine} engine) -> {run_dir}",
          flush=True)
    interrupted = False
    try:
        ENGINES[args.engine](overrides, n, run_dir)
    except KeyboardInterrupt:
        interrupted = True
    status, line = outcome(run_dir)
    print(line, file=sys.stderr if status else sys.stdout)
    print(f"run dir: {run_dir}")
    return 130 if interrupted else status


if __name__ == "__main__":
    sys.exit(main())
