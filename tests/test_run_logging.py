"""Run logging: metrics.jsonl, train.log and TensorBoard events (read back record by record),
and the mask / attention pictures pixel by pixel."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from PIL import Image

from hjepa_mlx.run_logging import (BLOCK_COLOURS, DROPPED_SHADE, TINT, RunLogger, attention_map_image,
                                   mask_overlay)


def read_events(run_dir) -> list:
    """Every Event in run_dir/tensorboard, parsed from the TFRecord framing (u64 length, u32 crc,
    payload, u32 crc) with tensorboardX's own protobuf classes."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted((run_dir / "tensorboard").iterdir()):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            events.append(Event.FromString(data[pos + 12:pos + 12 + length]))
            pos += 12 + length + 4
    return events


def summary_values(events):
    return [(e.step, v) for e in events for v in e.summary.value]


def test_logger_writes_jsonl_log_and_tensorboard(tmp_path, capsys):
    with RunLogger(tmp_path, use_tensorboard=True, log_frequency=10) as logger:
        logger.log_scalars(10, {"loss": 0.5, "lr": np.float32(1e-4)}, epoch=0)
        logger.log_scalars(20, {"loss": float("nan")}, epoch=1)
        logger.log_histograms(20, {"gradients/encoder": np.arange(12.0).reshape(3, 4)})
        logger.log_images(20, {"masks": np.full((8, 6, 3), 200, dtype=np.uint8)})
        logger.log_text("plan line 1\nplan line 2")
        logger.log_line("epoch 1/2 step 10/20")
        assert logger.should_log(20) and not logger.should_log(21)

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20] and [r["epoch"] for r in records] == [0, 1]
    assert records[0]["loss"] == 0.5 and records[0]["lr"] == pytest.approx(1e-4) and np.isnan(records[1]["loss"])
    assert all(r["time"] > 1e9 for r in records)          # Unix wall-clock seconds
    assert (tmp_path / "train.log").read_text() == "plan line 1\nplan line 2\nepoch 1/2 step 10/20\n"
    assert capsys.readouterr().out == "epoch 1/2 step 10/20\n"     # log_text is not printed, log_line is

    values = summary_values(read_events(tmp_path))
    scalars = {(step, v.tag): v.simple_value for step, v in values if v.WhichOneof("value") == "simple_value"}
    assert scalars[(10, "loss")] == 0.5 and scalars[(10, "lr")] == pytest.approx(1e-4)
    histo = next(v.histo for _, v in values if v.tag == "gradients/encoder")
    assert histo.num == 12 and histo.min == 0.0 and histo.max == 11.0 and histo.sum == pytest.approx(66.0)
    image = next(v.image for step, v in values if v.tag == "masks" and step == 20)
    assert (image.height, image.width) == (8, 6)
    assert np.array(Image.open(io.BytesIO(image.encoded_image_string)))[0, 0].tolist() == [200, 200, 200]
    assert any(v.tag.startswith("plan") for _, v in values)


def test_logger_appends_on_resume_and_can_skip_tensorboard(tmp_path):
    for step in (1, 2):
        logger = RunLogger(tmp_path, use_tensorboard=False, log_frequency=1)
        logger.log_scalars(step, {"loss": 1.0 / step})
        logger.close()
        logger.close()    # idempotent
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "tensorboard").exists()
    with pytest.raises(ValueError, match="uint8 HWC"):
        RunLogger(tmp_path, use_tensorboard=False).log_images(0, {"x": np.zeros((4, 4, 3), dtype=np.float32)})


def test_mask_overlay_colours_each_patch_by_its_role():
    p, grid = 2, (3, 4)                                       # 3x4 patches of 2x2 pixels
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(grid[0] * p, grid[1] * p, 3), dtype=np.uint8)
    context, blocks = [0, 1, 4], [[2, 3], [7, 11, 3]]         # patch 3 is in both blocks: the later wins
    out = mask_overlay(image, context, blocks, p)
    assert out.dtype == np.uint8 and out.shape == image.shape

    def patch(a, i):
        r, c = divmod(i, grid[1])
        return a[r * p:(r + 1) * p, c * p:(c + 1) * p].astype(np.float64)

    for i in range(grid[0] * grid[1]):
        src = patch(image, i)
        if i in (2,):
            want = src * (1 - TINT) + TINT * BLOCK_COLOURS[0]
        elif i in (3, 7, 11):
            want = src * (1 - TINT) + TINT * BLOCK_COLOURS[1]
        elif i in context:
            want = src
        else:
            want = src * DROPPED_SHADE
        np.testing.assert_allclose(patch(out, i), np.clip(np.rint(want), 0, 255), atol=0.51, err_msg=f"patch {i}")
    grey = mask_overlay(image[..., :1], context, blocks, p)   # one channel in, three out
    assert grey.shape == image.shape
    with pytest.raises(ValueError, match="out of range"):
        mask_overlay(image, [12], [], p)
    with pytest.raises(ValueError, match="patches"):
        mask_overlay(image, [0], [], 5)


def test_attention_map_image_puts_the_most_attended_patch_brightest():
    grid, n = (2, 3), 6
    rng = np.random.default_rng(1)
    attn = rng.random((4, n, n)) * 0.1
    attn[:, :, 4] += 1.0                                         # every query looks at patch 4
    attn[:, 2, :] = 0.0
    attn[:, 2, 1] = 1.0                                          # except query 2, which looks at patch 1
    attn /= attn.sum(-1, keepdims=True)
    img = attention_map_image(attn, grid, scale=3)
    assert img.shape == (6, 9, 3) and img.dtype == np.uint8
    brightness = img.astype(int).sum(-1)[::3, ::3]             # one pixel per patch
    assert np.unravel_index(brightness.argmax(), grid) == divmod(4, grid[1])
    assert img[3, 3].tolist() == [253, 231, 37]                  # top of the colour map at patch 4 (row 1, col 1)
    received = attn.mean(0).mean(0)
    assert np.unravel_index(brightness.argmin(), grid) == divmod(int(received.argmin()), grid[1])
    one = attention_map_image(attn[0], grid, query=2)
    assert one[0, 1].tolist() == [253, 231, 37]                  # query 2's row: patch 1
    assert attention_map_image(np.full((n, n), 1 / n), grid)[0, 0].tolist() == [68, 1, 84]   # flat map: all low
    with pytest.raises(ValueError, match="N = 2\\*3"):
        attention_map_image(np.ones((5, 5)), grid)
