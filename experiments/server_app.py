"""Flower ServerApp: builds the run's strategy, runs it, and records success or failure.

The run directory's summary.json says "finished" only when every round completed; any
exception marks it "failed" with a one-line reason (``flwr run`` itself exits 0 on a
crashed ServerApp, so ``experiments.run`` reads this file to set its exit status).
"""

from __future__ import annotations

import shutil

from flwr.common import Context
from flwr.server import ServerApp, ServerConfig
from flwr.server.compat import start_grid
from flwr.serverapp import Grid

from experiments.setup import effective_config, resolve, run_dir_for
from fedrec.results import RunRecorder


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def run_server(grid: Grid, flat: dict) -> RunRecorder:
    cfg, cls = resolve(flat)
    recorder = RunRecorder(run_dir_for(cfg))
    recorder.start({"flat": flat, "strategy_class": f"{cls.__module__}:{cls.__name__}"})
    try:
        strategy = cls(cfg=cfg, fed=cls.prepare_data(cfg), recorder=recorder)
        timeout = cfg.sim.round_timeout_s or None
        start_grid(grid=grid, strategy=strategy,
                   config=ServerConfig(num_rounds=cfg.train.num_rounds, round_timeout=timeout))
    except BaseException as exc:
        recorder.write_summary({"status": "failed", "error": one_line(exc),
                                "rounds_completed": len(recorder.rounds)})
        raise
    finally:
        if not cfg.sim.keep_device_state:
            shutil.rmtree(recorder.state_dir, ignore_errors=True)
    return recorder


def make_server_app(overrides: dict | None = None) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, effective_config(context.run_config, overrides or {}))

    return app


app = make_server_app()
