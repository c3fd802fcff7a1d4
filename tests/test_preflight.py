"""The pre-flight plan's arithmetic: durations, the budget verdict and its fix, the estimate block (seed
projections beside the measurement), the run clock's ETA, and the dry-run's calibration end to end on the
tiny model (a few seconds)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest

from hjepa_mlx.budget import fit_verdict, format_duration, parse_duration
from hjepa_mlx.calibrate import extrapolate
from hjepa_mlx.cli.train import main
from hjepa_mlx.errors import UserError
from hjepa_mlx.estimate import Measured, describe_estimate
from hjepa_mlx.eta import RunClock, Schedule, forward_costs, remaining
from tiny import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, seconds", [("8h", 28800), ("90m", 5400), ("1h30m", 5400), ("7.5h", 27000),
                                           ("45min", 2700), ("2d", 172800), ("3600s", 3600), ("8", 28800),
                                           (" 2H ", 7200)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["banana", "", "0h", "-1h", "8x", "h", "1h banana"])
def test_parse_duration_refuses_with_the_accepted_forms(text):
    with pytest.raises(UserError, match="e.g. 8h, 90m, 1h30m"):
        parse_duration(text)


def test_budget_banana_is_one_line_and_exit_2(capsys):
    assert main([str(ROOT / "configs/quickstart.yaml"), "--dry-run", "--budget", "banana"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --budget 'banana' is not a positive duration") and err.count("\n") == 1


def test_verdict_fits_with_the_time_to_spare():
    v = fit_verdict(budget_s=8 * 3600, step_s=1.0, steps_per_epoch=1000, epochs=20, overhead_s=60)
    assert v.fits and v.max_epochs is None and "20.0 min" not in v.text
    assert v.text.startswith("fits: 5.6 h of 8.0 h (70%), 2.4 h to spare")


def test_verdict_names_the_epochs_that_fit_and_the_speed_needed():
    # 45 epochs x 100 steps x 10 s = 12.5 h in 8 h: 28 whole epochs fit (28 x 1000 s = 7.8 h), 1.5625x speed
    v = fit_verdict(budget_s=8 * 3600, step_s=10.0, steps_per_epoch=100, epochs=45)
    assert not v.fits and v.max_epochs == 28 and v.speedup_needed == pytest.approx(1.5625)
    assert "training.epochs <= 28 (--set training.epochs=28" in v.text and "1.6x the speed" in v.text


def test_verdict_when_not_even_one_epoch_fits_names_steps_per_epoch():
    # overnight_safe-like: 9,655 steps/epoch at 35 s = 94 h per epoch; 8 h over 45 epochs = 18 steps per epoch
    v = fit_verdict(budget_s=8 * 3600, step_s=35.0, steps_per_epoch=9655, epochs=45)
    assert v.max_epochs == 0 and "training.steps_per_epoch <= 18 (of 9,655" in v.text
    assert "528x the speed" in v.text                          # 45 x 9,655 x 35 s / 8 h = 528.1


def test_format_duration_scales():
    assert [format_duration(s) for s in (5.25, 42, 750, 7.4 * 3600, 200 * 86400)] == \
        ["5.2 s", "42 s", "12.5 min", "7.4 h", "200.0 days"]


def plan_like(steps_per_epoch=9655, batch=16, accumulation=1):
    return SimpleNamespace(steps_per_epoch=steps_per_epoch, batch_size=batch, accumulation_steps=accumulation)


def test_estimate_block_puts_the_seed_projection_beside_the_measurement():
    m = Measured(step_s=35.0, compile_s=40.0, peak_memory_bytes=2.1e9, source="test")
    now = dt.datetime(2026, 12, 2, 22, 0)
    text = describe_estimate(m, plan_like(), 45, budget_s=8 * 3600, seed_name="overnight_safe", now=now,
                             memory_total=16e9)
    assert "compile       : 40.0 s" in text
    assert "35 s/step, 0.457 img/s" in text
    # 9,655 x 35 s = 93.9 h per epoch = 5,632 min, 536x the seed documents' 10-11 min
    assert "per epoch     : 9,655 steps = 3.9 days (5,632.1 min); the seed documents projected 10-11 min" in text
    assert "measured is 536x that" in text
    assert "peak 2.10 GB (mx.get_peak_memory) of 16.0 GB on this machine (13%)" in text
    assert "budget        : 8.0 h: does not fit" in text and "training.steps_per_epoch <= 18" in text
    end = now + dt.timedelta(seconds=45 * 9655 * 35.0 + 40.0)         # 176 days after the start
    assert f"started now it would finish {end:%a %Y-%m-%d %H:%M}" in text and end.year == 2027
    assert "seed documents" not in describe_estimate(m, plan_like(), 45, seed_name="quickstart")
    extrapolated = Measured(step_s=35.0, compile_s=40.0, peak_memory_bytes=0.81e9, source="t", memory_lower_bound=True)
    assert "peak at least 0.81 GB" in describe_estimate(extrapolated, plan_like(), 45)
    # the budget verdict counts what the run does besides its steps (overhead_s), not just compilation
    busy = Measured(step_s=1.0, compile_s=0.0, peak_memory_bytes=None, source="t", overhead_s=3600.0)
    assert "fits: 2.0 h of 2.0 h (100%)" in describe_estimate(busy, plan_like(100, 32), 36, budget_s=7200)  # not 1.0 h
    assert "does not fit: needs 2.0 h" in describe_estimate(busy, plan_like(100, 32), 37, budget_s=7200)


def test_extrapolate_is_the_line_through_both_points():
    assert extrapolate(2, 5.0, 4, 9.0, 16) == pytest.approx(33.0)     # 1 s + 2 s per image
    assert extrapolate(2, 100.0, 4, 100.0, 16) == pytest.approx(100.0)


def test_clock_leaves_compilation_out_of_the_rate():
    clock = RunClock(images_per_step=32, window=3)
    assert clock.step_s is None and clock.eta(10, {}) is None
    for s in (41.0, 1.0, 1.0, 2.0, 1.0, 1.0):
        clock.step(s)
    assert clock.compile_s == pytest.approx(40.0)                     # said once: first minus second step
    assert clock.step_s == pytest.approx(4 / 3)                       # the last 3 steady steps, not the first
    assert clock.images_per_s() == pytest.approx(32 * 3 / 4)


def test_eta_adds_the_other_activities_measured_or_estimated():
    clock = RunClock(images_per_step=8)
    for s in (10.0, 2.0, 2.0):
        clock.step(s)
    # nothing measured yet: validation costs its fallback share of a step (3 steps' worth)
    assert clock.eta(100, {"validation": 2}, {"validation": 3.0}) == pytest.approx(100 * 2 + 2 * 3 * 2)
    with clock.timing("validation"):
        pass
    clock.activities["validation"][-1] = 7.0                          # measured: 7 s
    assert clock.eta(100, {"validation": 2}, {"validation": 3.0}) == pytest.approx(200 + 14)


def test_remaining_counts_what_is_still_to_come():
    s = Schedule(epochs=3, steps_per_epoch=48, validate_every=1, knn_every=3, save_every=1, collapse_every=24,
                 plot_every=48, image_every=0)
    assert remaining(s, 0) == {"validation": 3, "knn": 1, "checkpoint": 3, "collapse": 6, "plots": 4, "images": 0}
    # after step 48 (end of epoch 1, before its validation ran) and after step 50
    assert remaining(s, 48)["validation"] == 3 and remaining(s, 48)["collapse"] == 5
    assert remaining(s, 50) == {"validation": 2, "knn": 1, "checkpoint": 2, "collapse": 4, "plots": 3, "images": 0}
    assert remaining(s, 144) == {"validation": 1, "knn": 1, "checkpoint": 1, "collapse": 1, "plots": 2, "images": 0}


def test_forward_costs_are_flop_shares_of_a_step():
    costs = forward_costs(images_per_step=32, train_flops=6.0, target_forward_flops=1.0, eval_forward_flops=2.0,
                          validation_images=256, knn_images=2560, probe_images=256)
    assert costs == {"validation": 256 * 2 / 192, "knn": 2560 / 192, "collapse": 256 / 192}


def test_dry_run_calibrates_and_prints_the_estimate(capsys):
    args = [str(ROOT / "configs/quickstart.yaml"), "--dry-run", "--budget", "2h", "--calibrate-steps", "1"]
    for item in TINY_RUN + ["data.batch_size=2"]:   # <= 2: timed at the full batch, one compile
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "# estimate (measured on this machine: 1 timed step(s) at batch" in out
    for label in ("compile       :", "speed         :", "per epoch     :", "total         :", "memory        :",
                  "budget        : 2.0 h: "):
        assert label in out
    assert "s/step" in out and "GB (mx.get_peak_memory)" in out and "would finish" in out


def test_no_calibrate_skips_the_timing(capsys):
    assert main([str(ROOT / "configs/overnight_safe.yaml"), "--dry-run", "--no-calibrate"]) == 0
    out = capsys.readouterr().out
    assert "# plan" in out and "# estimate" not in out and "calibrating" not in out
