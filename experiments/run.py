"""The documented way to run fedrec: validate the config, run it on Flower, exit by the result.

Usage::

    python -m experiments.run [--run-config FILE.toml] [--set key=value ...]
                              [--engine flwr|inprocess|deployment] [--num-supernodes N]
                              [--max-restarts N]
    python -m experiments.run --resume RUN_DIR

Exit status: 0 when the run's ``summary.json`` says ``finished``; 1 when the run failed or
did not finish (its one-line error is printed); 2 on bad input (unknown key, unknown
strategy or dataset, missing file), reported as one ``error: ...`` line on stderr *before*
Flower starts, so no run directory is left behind; 130 when interrupted (Ctrl-C or
SIGTERM: the Flower processes are stopped, the finished rounds stay, the summary says
"interrupted"). The run directory is printed at the end.

The run directory is claimed atomically (``experiments.resume.claim_run_dir``) once the
config is valid, with ``launch.json`` (the config as started). A watchdog
(``experiments.supervise``) stops every process this launcher started if it dies without
cleaning up (``kill -9``). ``--resume RUN_DIR`` continues an interrupted run from its
checkpoint; a run whose simulation worker died is resumed automatically (``--max-restarts``).

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
  ``$TMPDIR/fedrec-flwr-<run-name>-*/`` holding a ``config.toml`` whose connection names that
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
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from experiments.checks import (
    check_memory,
    check_num_supernodes,
    check_output_dir,
    ignored_options,
)
from experiments.deployment import (
    NODE_WAIT_S,
    DeploymentError,
    check_reachable,
    run_deployment,
    run_external,
)
from experiments.flower_engine import REPO, flower_home, run_flwr, run_inprocess
from experiments.ray_cluster import check_cluster, ray_address
from experiments.resume import claim_run_dir, plan_resume, resume_engine, write_launch
from experiments.setup import effective_config, pyproject_defaults, resolve, run_dir_for
from fedrec.data.registry import PRESETS, resolve_data_root
from fedrec.errors import ConfigError, FedrecError
from fedrec.memory import TreeSampler, format_peak
from fedrec.results import (
    mark_failed,
    mark_interrupted,
    read_summary_if_any,
    record_memory,
    resume_command,
)


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
    """Parse the config, prepare the data and build the device logic once; trains nothing
    and writes nothing (experiments.checks). Given keys the run ignores are one warning
    line each on stderr, printed only when the config is valid.

    Returns (run directory, number of devices). Raises FedrecError on bad input.
    """
    flat = effective_config({}, overrides)
    cfg, cls = resolve(flat)
    run_dir = run_dir_for(cfg)
    if run_dir.exists():
        raise ConfigError(f"run directory {run_dir} already exists; pass another run-name "
                          "(or none, to get a fresh one)")
    check_output_dir(run_dir.parent)
    fed = cls.prepare_data(cfg)
    check_memory(cls, cfg, fed)  # before the device logic allocates its item tables
    cls.device_cls(cfg, fed)
    given = [k for k, v in overrides.items() if v != pyproject_defaults().get(k)]
    for line in ignored_options(cls, flat, given):
        print(line, file=sys.stderr)
    return run_dir, int(fed.n_devices)


def num_supernodes(n_devices: int, devices_per_client: int) -> int:
    """Flower clients needed so every shard of devices has its own: ceil(n / per-client)."""
    return max(1, math.ceil(n_devices / devices_per_client))


ENGINES = {"flwr": run_flwr, "inprocess": run_inprocess, "deployment": run_deployment}


def engine_for(args: argparse.Namespace) -> Callable[..., None]:
    """The engine function, with the deployment options bound."""
    if args.engine != "deployment":
        return ENGINES[args.engine]
    if args.superlink:
        return functools.partial(run_external, address=args.superlink,
                                 root_certificates=args.root_certificates)
    return functools.partial(run_deployment, node_wait_s=args.node_wait)


def check_engine_options(args: argparse.Namespace) -> None:
    """Deployment-only options with another engine, impossible values, an unreachable
    SuperLink: ConfigError/DeploymentError (one line) before anything starts."""
    given = [name for name, value in (("--superlink", args.superlink),
                                      ("--root-certificates", args.root_certificates),
                                      ("--node-wait", args.node_wait != NODE_WAIT_S)) if value]
    if given and args.engine not in ("deployment", None):  # None: a resume, engine to come
        raise ConfigError(f"{', '.join(given)} only apply to --engine deployment; add it or "
                          "drop them")
    if args.node_wait <= 0:
        raise ConfigError(f"--node-wait {args.node_wait:g} must be > 0 seconds")
    if args.root_certificates and not Path(args.root_certificates).is_file():
        raise ConfigError(f"--root-certificates {args.root_certificates} not found; pass the "
                          "SuperLink's CA certificate (PEM)")
    if args.root_certificates and not args.superlink:
        raise ConfigError("--root-certificates needs --superlink (the SuperLinks this launcher "
                          "starts are insecure, on loopback)")
    if args.superlink:
        check_reachable(args.superlink)
    address = ray_address()
    if address and args.engine != "deployment":
        info = check_cluster(address)
        print(f"fedrec: simulation on the Ray cluster at RAY_ADDRESS={address} "
              f"({info['nodes']} nodes, {info['resources'].get('CPU', 0):g} CPUs)", flush=True)


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
    resume = f"; resume with: {resume_command(run_dir)}" if summary.get("restartable") else ""
    return 1, f"error: run {status} after {done} round(s): {reason}{resume}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.split("\n")[0])
    p.add_argument("--run-config", metavar="FILE.toml", help="flat TOML of run-config keys")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one run-config key (repeatable)")
    p.add_argument("--engine", choices=sorted(ENGINES), default=None,
                   help="flwr (default): simulation through flwr run; inprocess: "
                        "run_simulation in this process; deployment: a SuperLink and "
                        "SuperNodes (docs/deployment.md). A resume keeps the run's engine")
    p.add_argument("--num-supernodes", type=int, default=0,
                   help="Flower clients (default: ceil(devices / devices-per-client))")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run after its last finished round")
    p.add_argument("--max-restarts", type=int, default=2, metavar="N",
                   help="resume automatically at most N times when a simulation worker dies")
    p.add_argument("--node-wait", type=float, default=NODE_WAIT_S, metavar="S",
                   help="deployment: seconds to wait for every SuperNode to register")
    p.add_argument("--superlink", metavar="HOST:PORT",
                   help="deployment: run on this SuperLink and the SuperNodes someone started "
                        "against it (docs/deployment.md) instead of local ones")
    p.add_argument("--root-certificates", metavar="CA.pem",
                   help="deployment with --superlink: TLS to the SuperLink (else insecure)")
    return p.parse_args(argv)


def given_values(run_config: str | None, sets: list[str]) -> dict[str, Any]:
    return {**(read_run_config(run_config) if run_config else {}), **parse_sets(sets)}


def prepare(args: argparse.Namespace) -> tuple[dict[str, Any], Path, int, int] | None:
    """(overrides, claimed run dir, devices, Flower clients); None: a finished run to resume."""
    if args.resume:
        plan = plan_resume(Path(args.resume), given_values(args.run_config, args.sets))
        if plan is None:
            return None
        overrides, n_devices, n_clients = plan
        run_dir = Path(args.resume).resolve()
        args.engine = resume_engine(run_dir, args.engine, n_clients, args.num_supernodes)
        return overrides, run_dir, n_devices, args.num_supernodes or n_clients
    overrides = build_overrides(args.run_config, args.sets, Path.cwd(), datetime.now(UTC))
    run_dir, n_devices = validate(overrides)
    per_client = int(resolve(effective_config({}, overrides))[0].sim.devices_per_client)
    n_clients = args.num_supernodes or num_supernodes(n_devices, per_client)
    if args.num_supernodes:   # the cloud waits for these, not for one client per shard
        overrides["flower-clients"] = n_clients
    auto = not given_values(args.run_config, args.sets).get("run-name")
    run_dir = claim_run_dir(run_dir.parent, run_dir.name, auto)
    overrides["run-name"] = run_dir.name
    write_launch(run_dir, overrides, n_devices, n_clients, args.engine)
    return overrides, run_dir, n_devices, n_clients


def start_watchdog(run_dir: Path, home: Path) -> subprocess.Popen:
    """experiments.supervise in a session of its own: it outlives a ``kill -9`` of this
    process and then stops everything this process started (see its docstring)."""
    return subprocess.Popen([sys.executable, "-m", "experiments.supervise", str(os.getpid()),
                             str(run_dir), str(home)], cwd=REPO, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def launch(engine: Callable[..., None], overrides: dict[str, Any], n_clients: int,
           run_dir: Path, max_restarts: int) -> bool:
    """Run on ``engine``, resuming up to ``max_restarts`` times after a dead worker; True
    when interrupted (Ctrl-C/SIGTERM). Every process started is stopped on return."""
    home = flower_home(run_dir)
    watchdog = start_watchdog(run_dir, home)
    try:
        for attempt in range(max_restarts + 1):
            try:
                engine(overrides, n_clients, run_dir, home)
            except KeyboardInterrupt:
                mark_interrupted(run_dir, "interrupted by Ctrl-C or SIGTERM")
                return True
            except DeploymentError as exc:  # the federation never came up: no round ran
                mark_failed(run_dir, str(exc))
                return False
            summary = read_summary_if_any(run_dir)
            if summary.get("status") != "failed" or not summary.get("restartable") \
                    or attempt == max_restarts:
                return False
            print(f"fedrec: {summary.get('error')}; restarting from the checkpoint of round "
                  f"{summary.get('rounds_completed', 0)} ({attempt + 1} of {max_restarts})",
                  file=sys.stderr, flush=True)
            overrides = {**overrides, "resume": True}
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
        return False
    finally:
        watchdog.kill()
        watchdog.wait()
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.resume:
        args.engine = args.engine or "flwr"
    if str(REPO) not in sys.path:  # plug-in modules in the project folder, as in the FAB
        sys.path.insert(0, str(REPO))
    try:
        check_num_supernodes(args.num_supernodes)
        check_engine_options(args)
        prepared = prepare(args)
    except FedrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if prepared is None:
        summary = read_summary_if_any(Path(args.resume).resolve())
        print(f"run {Path(args.resume).resolve()} already finished {summary.get('rounds')} rounds; "
              "nothing to resume, nothing changed")
        return 0
    overrides, run_dir, n_devices, n = prepared
    verb = "resuming" if args.resume else "fedrec:"
    print(f"{verb} {n_devices} devices on {n} Flower clients ({args.engine} engine) -> {run_dir}",
          flush=True)
    with TreeSampler(os.getpid()) as sampler:   # the launcher and everything it starts
        interrupted = launch(engine_for(args), overrides, n, run_dir, args.max_restarts)
    record_memory(run_dir, asdict(sampler.peak))
    status, line = outcome(run_dir)
    print(line, file=sys.stderr if status else sys.stdout)
    print(f"memory: {format_peak(sampler.peak)}")
    print(f"run dir: {run_dir}")
    return 130 if interrupted else status


if __name__ == "__main__":
    sys.exit(main())
