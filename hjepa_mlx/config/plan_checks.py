"""Checks a plan must pass before anything heavy happens, so `--dry-run` catches what would otherwise
fail minutes into a run: an epoch of zero steps, `training.steps_per_epoch` beyond the data (a
mid-epoch StopIteration), a mask geometry that cannot be drawn, and an image size whose activations
could never fit in this machine's memory (said before allocating, not as an allocation failure).
"""

from __future__ import annotations

import os

from hjepa_mlx.errors import UserError
from hjepa_mlx.config.plan import Plan

_ATTN_COPIES = 3        # scores, softmax and its gradient live at once in the backward pass


def physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_steps(config, plan: Plan) -> None:
    """The data must fill at least one optimizer step, and steps_per_epoch cannot exceed what it holds."""
    images = plan.images_per_epoch
    if images is None:
        return      # unknown until the files are read; train() checks again with the real sizes
    per_step = plan.batch_size * plan.accumulation_steps
    possible = images // per_step
    if possible == 0:
        raise UserError(f"an optimizer step takes data.batch_size x training.accumulation_steps = {per_step:,} "
                        f"images but an epoch holds {images:,} training images ({plan.val_holdout:,} per dataset held out "
                        f"for validation: data.val_holdout rounded up to whole batches), so 0 steps per epoch; "
                        f"lower data.batch_size or training.accumulation_steps")
    asked = config.training.steps_per_epoch
    if asked is not None and asked > possible:
        raise UserError(f"training.steps_per_epoch {asked:,} is beyond the data: {images:,} images make "
                        f"{possible:,} steps of {per_step:,} images; lower it to at most {possible:,} or remove it")


def check_memory(config, plan: Plan, available: int | None = None) -> None:
    """Refuse an image size whose attention scores alone (batch x heads x tokens^2, fp32) exceed the
    physical memory; the first activation would fail to allocate."""
    available = physical_memory_bytes() if available is None else available
    if not available:
        return
    tokens = plan.grid[0] * plan.grid[1]
    enc = plan.encoder
    scores = config.data.batch_size * enc.num_heads * tokens * tokens * 4 * _ATTN_COPIES
    images = config.data.batch_size * plan.image_size ** 2 * 3 * 4
    need = max(scores, images)
    if need > available:
        raise UserError(f"data.image_size {plan.image_size} with patch {enc.patch_size} gives {tokens:,} tokens per "
                        f"image; one attention layer for a batch of {config.data.batch_size} needs about "
                        f"{need / 1e9:,.1f} GB, more than this machine's {available / 1e9:,.1f} GB of memory; lower "
                        f"data.image_size or data.batch_size")


def check_masks(config, plan: Plan, available: int | None = None) -> None:
    """Refuse target blocks that cannot leave a context, and mask planning that would not fit in memory
    (`plan_masks` simulates 4,096 draws of every block on the grid)."""
    from hjepa_mlx.masks import _PLAN_DRAWS

    k = config.masking
    cells = plan.grid[0] * plan.grid[1]
    per_block = max(1, round(sum(k.mask_scale) / 2 * cells))
    if k.num_masks * per_block >= cells:
        raise UserError(f"masking.num_masks {k.num_masks} blocks of {per_block} patches (masking.mask_scale "
                        f"{list(k.mask_scale)}) cover the whole {plan.grid[0]}x{plan.grid[1]} patch grid, leaving "
                        f"no context to predict from; lower masking.num_masks or masking.mask_scale")
    if k.min_keep >= cells:
        raise UserError(f"masking.min_keep {k.min_keep} is not below the {cells} patches of the "
                        f"{plan.grid[0]}x{plan.grid[1]} grid; lower it")
    available = physical_memory_bytes() if available is None else available
    need = _PLAN_DRAWS * k.num_masks * cells * 8 * 2
    if available and need > available / 4:
        raise UserError(f"planning masks for {k.num_masks} blocks on a {plan.grid[0]}x{plan.grid[1]} grid needs "
                        f"about {need / 1e9:.1f} GB; lower masking.num_masks or data.image_size")


def check_plan(config, plan: Plan):
    """Run every check; returns the mask plan (K and Nc fixed for the run)."""
    from hjepa_mlx.build import build_mask_plan

    check_steps(config, plan)
    check_memory(config, plan)
    check_masks(config, plan)
    return build_mask_plan(config, plan)


def describe_masks(mask_plan) -> str:
    m = mask_plan
    return (f"masks         : {m.num_masks} target block(s) of {m.num_target} patches, {m.num_context} context "
            f"patches per image ({m.accept_rate:.0%} of draws accepted)")
