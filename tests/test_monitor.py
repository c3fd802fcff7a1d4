"""scripts/monitor.py on a recorded run (tests/data/recorded_run: the metrics.jsonl, run.json and train.log of
a 22-step tiny quick-start run): one frame, a run cut off mid-way (ETA, stall flag), side by side, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hjepa_mlx.cli.monitor import main
from hjepa_mlx.monitor import frame, snapshot, sparkline

RECORDED = Path(__file__).parent / "data" / "recorded_run"


def records():
    return [json.loads(line) for line in (RECORDED / "metrics.jsonl").read_text().splitlines()]


def finished_run(tmp_path: Path) -> Path:
    run = tmp_path / "done"
    shutil.copytree(RECORDED, run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "best").write_text("step_00000022.safetensors")
    (run / "checkpoints" / "step_00000022.json").write_text(json.dumps(
        {"step": 22, "best_metric": 22.5744, "config": {"checkpoint": {"metric": "val_loss"}}}))
    return run


def cut_run(tmp_path: Path, upto_step: int) -> Path:
    """The same run as if it were still going (or had died) after `upto_step`: later records and the
    log's last lines removed, half a record being written at the end of metrics.jsonl."""
    run = tmp_path / f"cut{upto_step}"
    run.mkdir()
    shutil.copy(RECORDED / "run.json", run)
    kept = [r for r in records() if r["step"] <= upto_step]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"step": 99, "lo')
    (run / "train.log").write_text("epoch 1/2 step 10/11\n")
    return run, kept


def test_one_frame_of_a_finished_run_shows_every_part(tmp_path, capsys):
    run = finished_run(tmp_path)
    assert main([str(run), "--once", "--width", "100"]) == 0
    out = capsys.readouterr().out
    assert "100.0% 22/22" in out and "epoch 2/2" in out and "finished" in out
    for label in ("prediction", "vicreg inv", "vicreg var", "vicreg cov", "val loss", "lr", "k-NN top-1", "RankMe",
                  "feature std"):
        assert label in out
    assert "0.3834" in out                    # the last prediction loss of the recording
    assert "collapse alarm: RAISED (last check step 20" in out
    assert "val loss: 22.57 at step 22" in out
    assert "k-NN: 0.1562 at step 22 (k=1 0.1875 k=5 0.1875 k=20 0.1562)" in out
    assert "best: step_00000022.safetensors (step 22, val_loss 22.57)" in out
    assert "STALLED" not in out               # finished runs are never stalled, however old


def test_a_run_cut_off_mid_way_has_an_eta_and_is_flagged_when_it_stops_logging(tmp_path):
    run, kept = cut_run(tmp_path, 10)
    last_eta = [r for r in kept if "eta_s" in r][-1]
    soon = snapshot(run, now=last_eta["time"] + 30)
    assert soon.step == 10 and soon.total_steps == 22 and not soon.finished and not soon.stalled
    assert soon.eta_s == pytest.approx(last_eta["eta_s"] - 30, abs=1e-6)   # counts down from the logged ETA
    assert soon.images_per_s == pytest.approx(last_eta["images_per_s"])
    later = snapshot(run, now=max(r["time"] for r in kept) + 3600)
    assert later.stalled and later.eta_s == 0.0
    assert "STALLED" in frame([run], total_width=80, now=max(r["time"] for r in kept) + 3600)


def test_several_runs_side_by_side(tmp_path):
    run, _ = cut_run(tmp_path, 10)
    text = frame([finished_run(tmp_path), run], total_width=130)
    both = [line for line in text.splitlines() if "done" in line and "cut10" in line]
    assert both, text                         # the two names on one line: side by side
    assert max(len(line) for line in text.splitlines()) <= 130


def test_sparkline_scales_to_the_range():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, 5, 5], 8) == "▁▁▁"
    assert len(sparkline(list(range(100)), 10)) == 10


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "is not a directory"),
    (lambda tmp: tmp, "has no metrics.jsonl"),
])
def test_not_a_run_directory_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    assert main([str(make(tmp_path)), "--once"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
