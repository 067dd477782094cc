"""The two ways ``experiments.run`` starts Flower: ``flwr run`` against a SuperLink of its
own (``run_flwr``) and ``run_simulation`` in this process (``run_inprocess``).

Why each step is there (flwr 1.41 behaviour found by experiment) is in the docstring of
``experiments/run.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments import procs
from experiments.setup import PYPROJECT

REPO = PYPROJECT.parent
CONNECTION = "fedrec-local"
#: set for every Flower process we start (why: experiments/run.py docstring)
FLOWER_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}



def toml_scalar(value: Any) -> str:
    """A TOML literal for a str/bool/int/float (JSON string escapes are valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def to_toml(flat: Mapping[str, Any]) -> str:
    return "".join(f"{k} = {toml_scalar(v)}\n" for k, v in sorted(flat.items()))


def flower_env(home: Path) -> dict[str, str]:
    """Our environment + FLOWER_ENV, FLWR_HOME, and this Python's bin dir first on PATH
    (the SuperLink spawns ``flower-superexec`` etc. by name)."""
    env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(home)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def superlink_command(port: int, simulation: bool = True) -> list[str]:
    """Our own SuperLink on loopback; without ``simulation`` SuperNodes connect to it."""
    return [str(Path(sys.executable).parent / "flower-superlink"), "--insecure",
            *(["--simulation"] if simulation else []),
            "--disable-runtime-dependency-installation", "--isolation", "subprocess",
            "--host", "127.0.0.1", "--port", str(port)]


def start_superlink(port: int, home: Path, run_dir: Path, simulation: bool = True
                    ) -> subprocess.Popen:
    """The SuperLink in a session of its own, logging to ``<run dir>/superlink.log``; returns
    once its /health answers (RuntimeError if it dies or does not come up)."""
    log = run_dir / "superlink.log"
    with log.open("w") as fh:
        link = subprocess.Popen(superlink_command(port, simulation), cwd=home / "cwd",
                                env=flower_env(home), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(port, link, log)
    except BaseException:
        stop_superlink(link)
        raise
    return link


def wait_ready(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    """Poll the SuperLink's /health endpoint until it answers (or the process died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"flower-superlink not ready after {timeout_s:.0f} s; see {log}")


def stop_superlink(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop the SuperLink and everything it started (SuperExec, simulation, Ray): SIGTERM
    to their process groups, SIGKILL to whatever is still alive after ``grace_s``."""
    procs.stop(set(), procs.process_groups(proc.pid), grace_s)
    proc.wait()


#: what a FAB may hold (flwr.common.constant.FAB_INCLUDE_PATTERNS)
FAB_SUFFIXES = (".py", ".toml", ".md", ".yaml", ".yml", ".json", ".jsonl")


def ignored_dirs(gitignore: str) -> tuple[set[str], set[str]]:
    """Plain directory patterns of a .gitignore: (names ignored anywhere, top-level names)."""
    anywhere: set[str] = set()
    top: set[str] = set()
    for line in gitignore.splitlines():
        line = line.strip()
        if line.endswith("/") and not any(c in line for c in "*?[!#"):
            (top if line.startswith("/") else anywhere).add(line.strip("/"))
    return anywhere, top


def stage_app(repo: Path, dest: Path, skip: tuple[Path, ...] = ()) -> None:
    """Copy the files a FAB may contain into ``dest``, never entering hidden dirs (.venv,
    .git, .flwr), __pycache__, plainly gitignored dirs or ``skip`` (the output dir).

    ``flwr run <repo>`` walks and stats every file under the repo, ~42,000 in .venv, which
    took 5-25 s per run here; flwr still applies .gitignore and its FAB rules to the copy.
    """
    gitignore = repo / ".gitignore"
    anywhere, top = ignored_dirs(gitignore.read_text() if gitignore.is_file() else "")
    skipped = {p.resolve() for p in skip}
    for dirpath, dirnames, filenames in os.walk(repo):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not (
            d.startswith(".") or d == "__pycache__" or d in anywhere
            or (here == repo and d in top) or (here / d).resolve() in skipped)]
        for name in filenames:
            if name.endswith(FAB_SUFFIXES) or name in ("LICENSE", ".gitignore"):
                target = dest / (here / name).relative_to(repo)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(here / name, target)


def flwr_command(app: Path, run_config_file: Path, n_supernodes: int) -> list[str]:
    return [str(Path(sys.executable).parent / "flwr"), "run", str(app), CONNECTION, "--stream",
            "--run-config", str(run_config_file), "--federation-config",
            f"num-supernodes={n_supernodes} client-resources-num-cpus=1"]


def flower_home(run_dir: Path) -> Path:
    """A fresh per-invocation FLWR_HOME in the system's temporary folder (never in the
    user's checkout); deleted when the run ends, or by the watchdog if the launcher dies."""
    return Path(tempfile.mkdtemp(prefix=f"fedrec-flwr-{run_dir.name[:40]}-"))


def write_connection(home: Path, address: str, root_certificates: Path | None = None) -> None:
    """``$FLWR_HOME/config.toml`` naming one SuperLink (insecure unless certificates given)."""
    tls = (f"root-certificates = {json.dumps(str(root_certificates))}\n" if root_certificates
           else "insecure = true\n")
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{address}"\n{tls}')


def stage(overrides: Mapping[str, Any], run_dir: Path, home: Path) -> None:
    """The app copy and its run config in ``home``; the run directory."""
    (home / "cwd").mkdir(parents=True, exist_ok=True)
    (home / "run_config.toml").write_text(to_toml(overrides))
    stage_app(REPO, home / "app", skip=(run_dir.parent,))
    run_dir.mkdir(parents=True, exist_ok=True)


def run_flwr(overrides: Mapping[str, Any], n_supernodes: int, run_dir: Path, home: Path) -> None:
    """``flwr run`` against a SuperLink of our own (see module docstring)."""
    stage(overrides, run_dir, home)
    port = free_port()
    write_connection(home, f"127.0.0.1:{port}")
    previous = signal.signal(signal.SIGTERM, _interrupted)  # so `finally` runs on kill
    link = None
    try:
        link = start_superlink(port, home, run_dir)
        cmd = flwr_command(home / "app", home / "run_config.toml", n_supernodes)
        subprocess.run(cmd, cwd=home / "cwd", env=flower_env(home), check=False)
    finally:
        if link is not None:
            stop_superlink(link)
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(home, ignore_errors=True)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_inprocess(overrides: Mapping[str, Any], n_supernodes: int, run_dir: Path,
                  home: Path | None = None) -> None:
    """``run_simulation`` in this process; a ServerApp exception is recorded in summary.json."""
    for key, value in FLOWER_ENV.items():
        os.environ.setdefault(key, value)
    from flwr.client import ClientApp
    from flwr.simulation import run_simulation

    from experiments.client_app import make_client_fn
    from experiments.server_app import make_server_app

    try:
        run_simulation(server_app=make_server_app(dict(overrides)),
                       client_app=ClientApp(client_fn=make_client_fn(dict(overrides))),
                       num_supernodes=n_supernodes,
                       backend_config={"client_resources": {"num_cpus": 1}})
    except Exception as exc:  # noqa: BLE001 - the outcome is read from summary.json
        first = (str(exc).splitlines() or [""])[0]
        print(f"run_simulation raised {type(exc).__name__}: {first}", file=sys.stderr)
