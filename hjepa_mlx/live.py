"""What a running training shows while it runs: the live console line, the compile time said once, the
measured estimate once the first steady steps are timed (the same block `--dry-run` prints, with the
budget verdict), the status of each activity between steps, and `run.json` for scripts/monitor.py.

The loop (train.py) calls `step()` after each optimizer step and wraps everything else in `phase()`; the
clock (eta.py) keeps train steps, compilation and the other activities apart.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import mlx.core as mx

from hjepa_mlx.budget import format_duration
from hjepa_mlx.console import Console, progress_text
from hjepa_mlx.estimate import Measured, describe_estimate, finish_time, machine_memory_bytes
from hjepa_mlx.eta import RunClock, Schedule, remaining

ESTIMATE_AFTER_STEPS = 5    # steady steps timed before the run prints its measured estimate


class LiveRun:
    """schedule: when the run does what (run_settings.run_schedule); info: what run.json says of the config
    (run_settings.run_info); plan: the run's; logger: its RunLogger (its lines go through this console); budget_s:
    `--budget`; seed_name: the config file's stem; fallback: eta.forward_costs (activities not timed yet)."""

    def __init__(self, schedule: Schedule, info: dict, plan, logger, *, budget_s: float | None = None,
                 seed_name: str | None = None, fallback: dict | None = None, console: Console | None = None,
                 start_step: int = 0):
        self.info, self.plan, self.logger = info, plan, logger
        self.console = console or Console()
        logger.console = self.console
        self.budget_s, self.seed_name = budget_s, seed_name
        self.fallback = fallback or {}
        self.schedule = schedule
        self.clock = RunClock(plan.batch_size * plan.accumulation_steps)
        self.start_step = start_step
        self._said_compile = self._said_estimate = False
        if logger.dir is not None:           # None: a data-parallel rank other than 0 writes nothing
            self.write_run_json(logger.dir)

    def write_run_json(self, run_dir: Path) -> None:
        """run.json: what scripts/monitor.py needs to know that metrics.jsonl does not say."""
        info = {"total_steps": self.schedule.total_steps, "steps_per_epoch": self.schedule.steps_per_epoch,
                "epochs": self.schedule.epochs, "images_per_step": self.clock.images_per_step,
                "started": round(time.time(), 3), "start_step": self.start_step, "budget_s": self.budget_s,
                **self.info}
        (Path(run_dir) / "run.json").write_text(json.dumps(info, indent=2) + "\n")

    # ------------------------------------------------------------ steps

    def before_first_step(self) -> None:
        self.console.status("compiling the train step (the first step includes it) ...")

    def step(self, seconds: float, *, step: int, epoch: int, step_in_epoch: int, metrics) -> None:
        """After each optimizer step: `seconds` of wall time (data included), `step` the global step done,
        `metrics` the step's metrics (MLX scalars, already evaluated)."""
        self.clock.step(seconds)
        if not self._said_compile and self.clock.compile_s is not None:
            self._said_compile = True
            self.logger.log_line(f"compiled the train step in {self.clock.compile_s:.1f} s (left out of img/s and ETA)")
        if not self._said_estimate and (len(self.clock.steady) >= ESTIMATE_AFTER_STEPS or
                                       (self.clock.steady and step_in_epoch == self.plan.steps_per_epoch)):
            self._said_estimate = True
            self.logger.log_line(self.estimate_text(step))
        if self.console.tty:
            scalars = {name: float(v.item()) for name, v in metrics.items()}
            self.console.live(self.progress(epoch, step_in_epoch, step, scalars))

    def rates(self, step: int) -> dict:
        """The scalars logged beside the step's metrics: steady img/s, ETA, memory."""
        out = {"memory_gb": mx.get_active_memory() / 1e9, "peak_memory_gb": mx.get_peak_memory() / 1e9}
        ips, eta = self.clock.images_per_s(), self.eta(step)
        if ips is not None:
            out["images_per_s"] = ips
        if eta is not None:
            out["eta_s"] = eta
        return out

    def eta(self, step: int) -> float | None:
        return self.clock.eta(self.schedule.total_steps - step, remaining(self.schedule, step), self.fallback)

    def progress(self, epoch: int, step_in_epoch: int, step: int, scalars: dict) -> str:
        return progress_text(epoch=epoch, epochs=self.schedule.epochs, step_in_epoch=step_in_epoch,
                             steps_per_epoch=self.schedule.steps_per_epoch, step=step,
                             total_steps=self.schedule.total_steps, scalars=scalars,
                             images_per_s=self.clock.images_per_s(), eta_s=self.eta(step),
                             peak_memory_gb=mx.get_peak_memory() / 1e9)

    def log_progress(self, epoch: int, step_in_epoch: int, step: int, scalars: dict) -> None:
        """The progress line at log frequency: into train.log always, on the console when it is not a
        terminal (a terminal has the live line)."""
        self.logger.log_line(self.progress(epoch, step_in_epoch, step, scalars), echo=not self.console.tty)

    def estimate_text(self, step: int) -> str:
        c = self.clock
        eta = self.eta(step)
        others = 0.0 if eta is None else max(eta - (self.schedule.total_steps - step) * c.step_s, 0.0)
        m = Measured(c.step_s, c.compile_s, mx.get_peak_memory(),
                     f"the first {len(c.steady)} steady steps of this run, data loading included",
                     overhead_s=(c.compile_s or 0.0) + others)
        text = describe_estimate(m, self.plan, self.schedule.epochs, budget_s=self.budget_s,
                                 seed_name=self.seed_name, memory_total=machine_memory_bytes(),
                                 title="measured estimate", finish=False)
        if eta is not None:
            text += (f"\nwith the rest : validation, k-NN, collapse checks, checkpoints and pictures included, "
                     f"{format_duration(eta)} to go; finishes {finish_time(eta)}")
        return text

    # ------------------------------------------------------------ everything else

    @contextmanager
    def phase(self, kind: str, text: str):
        """Time an activity between steps under `kind` and show `text` while it runs."""
        self.console.status(text)
        with self.clock.timing(kind):
            yield
        if self.console.tty:
            self.console.live(f"{text} done in {self.clock.activities[kind][-1]:.1f} s")

    def close(self) -> None:
        self.console.close()
