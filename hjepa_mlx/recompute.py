"""How many blocks to recompute in the backward pass (`training.use_gradient_checkpointing`).

`training.recompute: all` recomputes every block of the context encoder and the predictor (the seeds'
meaning of the key: least memory, one extra forward of both). `fit` recomputes only as many blocks as the
estimated training memory needs to stay under `training.recompute_memory_fraction` of the device's memory,
so a machine with room to spare runs the step at the speed of no recomputation (same math, same results).

The estimate is analytic, per block and per micro-batch: a transformer block keeps, for its backward,
its input plus ~6 width-sized tensors, the MLP's hidden activation before and after the activation, and
per token either two attention maps (scores and softmax, MLX's ops) or one log-sum-exp per head (the C++
attention kernel, which rebuilds the map in the backward); a recomputed block keeps only its input.
Measured 2026-12-03 with the kernels: 0.92x MLX's peak per block on the test shape (width 64, batch 32,
uncompiled; 0.74x with MLX's ops) and 1.3x on overnight_safe's compiled step (1.0 GB between no and full
recomputation), i.e. on the safe side where it matters. Fixed memory is the
block weights x 5 (online, target, gradients, AdamW's two moments). `tests/test_recompute.py` holds the
per-block estimate against MLX's measured peak memory. Multi-crop's local crops are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOAT_BYTES = 4                 # fp32; bf16 activations need less, so the estimate errs on the safe side
PARAMETER_COPIES = 5            # online, target (EMA), gradients, AdamW m and v


@dataclass(frozen=True)
class Stack:
    """One trained stack of blocks at the step's shapes: `sequences` x `tokens` tokens of `width`."""

    name: str
    depth: int
    sequences: int
    tokens: int
    width: int
    hidden: int
    heads: int
    # The block keeps its (heads x tokens) attention map per token; not with the C++ attention kernel,
    # which keeps one log-sum-exp per head and token and rebuilds the map in the backward.
    attention_map: bool = True

    @property
    def block_bytes(self) -> float:
        """Activation bytes one block keeps for its backward when it is not recomputed."""
        per_token = 7 * self.width + 2 * self.hidden + self.heads * (2 * self.tokens if self.attention_map else 1)
        return float(self.sequences * self.tokens * per_token * FLOAT_BYTES)

    @property
    def input_bytes(self) -> float:
        """What a recomputed block keeps: its input."""
        return float(self.sequences * self.tokens * self.width * FLOAT_BYTES)


def parameter_bytes(stacks: list[Stack]) -> float:
    """Fixed memory: the stacks' block weights (qkv, projection, MLP, norms, biases) x PARAMETER_COPIES.
    Embeddings and heads are small beside the blocks and left out."""
    count = sum(s.depth * (4 * s.width * s.width + 2 * s.width * s.hidden + 9 * s.width + s.hidden) for s in stacks)
    return float(count * FLOAT_BYTES * PARAMETER_COPIES)


def estimated_bytes(stacks: list[Stack], recomputed: dict[str, int], fixed_bytes: float) -> float:
    """Training memory with `recomputed[name]` leading blocks of each stack recomputed. While a recomputed
    block runs its backward it holds its own activations again: one block's worth on top."""
    total = fixed_bytes
    for s in stacks:
        n = recomputed.get(s.name, 0)
        total += (s.depth - n) * s.block_bytes + n * s.input_bytes
    worst = max((s.block_bytes for s in stacks if recomputed.get(s.name, 0)), default=0.0)
    return total + worst


def choose_recomputed(stacks: list[Stack], limit_bytes: float, fixed_bytes: float) -> dict[str, int]:
    """The fewest recomputed blocks whose estimate fits `limit_bytes`: one block at a time from the stack
    whose next block frees the most memory. Every block when nothing fits (the most that can be saved)."""
    recomputed = {s.name: 0 for s in stacks}
    while estimated_bytes(stacks, recomputed, fixed_bytes) > limit_bytes:
        open_stacks = [s for s in stacks if recomputed[s.name] < s.depth]
        if not open_stacks:
            break
        best = max(open_stacks, key=lambda s: s.block_bytes - s.input_bytes)
        recomputed[best.name] += 1
    return recomputed


def describe(stacks: list[Stack], recomputed: dict[str, int], policy: str, fixed_bytes: float,
             limit_bytes: float | None) -> str:
    """One line: what is recomputed and why."""
    parts = ", ".join(f"{recomputed[s.name]} of {s.depth} {s.name} blocks" for s in stacks)
    total = estimated_bytes(stacks, recomputed, fixed_bytes)
    est = f"{total / 1e9:.2f} GB of block activations and weights"
    if policy == "all":
        return f"recomputation: {parts} (training.recompute: all; estimated {est})"
    if limit_bytes is None:
        return f"recomputation: {parts} (training.recompute: fit, but this device's memory is unknown: every block)"
    fits = "within" if total <= limit_bytes else "does NOT fit"
    return (f"recomputation: {parts} (training.recompute: fit; estimated {est}, {fits} the limit of "
            f"{limit_bytes / 1e9:.1f} GB = training.recompute_memory_fraction of this device's memory)")
