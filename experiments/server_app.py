"""Flower ServerApp: builds the run's strategy, runs it, and records success or failure.

The run directory's summary.json says "finished" only when every round completed; any
exception marks it "failed" with a one-line reason (``flwr run`` itself exits 0 on a
crashed ServerApp, so ``experiments.run`` reads this file to set its exit status). A
failure that more of the same will cure (a dead simulation worker) is marked
``restartable``: the launcher resumes it from the checkpoint. With ``resume = true`` the
strategy continues from ``<run dir>/checkpoint.pkl`` after its last finished round.
"""

from __future__ import annotations

from flwr.common import Context
from flwr.server import ServerApp, ServerConfig, SimpleClientManager
from flwr.server.compat import start_grid
from flwr.serverapp import Grid

from experiments.setup import effective_config, resolve, run_dir_for
from fedrec.results import RunRecorder
from strategies.driver import PhasedServer
from strategies.faults import WorkerLost


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def run_server(grid: Grid, flat: dict) -> RunRecorder:
    cfg, cls = resolve(flat)
    recorder = RunRecorder(run_dir_for(cfg))
    checkpoint = recorder.load_checkpoint() if cfg.output.resume else None
    done = checkpoint[0] if checkpoint else 0
    recorder.start({"flat": flat, "strategy_class": f"{cls.__module__}:{cls.__name__}"},
                   resume_round=done)
    try:
        strategy = cls(cfg=cfg, fed=cls.prepare_data(cfg), recorder=recorder)
        if checkpoint:
            strategy.load_state(*checkpoint)
        if done < cfg.train.num_rounds:
            timeout = cfg.sim.round_timeout_s or None
            server = PhasedServer(client_manager=SimpleClientManager(), strategy=strategy)
            start_grid(grid=grid, server=server, config=ServerConfig(
                num_rounds=cfg.train.num_rounds - done, round_timeout=timeout))
        else:                      # killed after the last round's checkpoint: write the end
            strategy.finish()      # (its devices' state stays with the hosts; docs/running.md)
    except BaseException as exc:
        ending = ending_of(exc)
        recorder.write_summary({"status": "interrupted" if ending == "interrupted" else "failed",
                                "error": one_line(exc), "restartable": ending != "failed",
                                "rounds_completed": len(recorder.rounds)})
        raise
    return recorder


def ending_of(exc: BaseException) -> str:
    """"restartable" (a worker died: resume on fresh workers), "interrupted" or "failed"."""
    if isinstance(exc, WorkerLost):
        return "restartable"
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"


def make_server_app(overrides: dict | None = None) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, effective_config(context.run_config, overrides or {}))

    return app


app = make_server_app()
