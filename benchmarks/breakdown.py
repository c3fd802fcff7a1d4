"""Where a train step's time goes: per phase and per op class (used by `throughput.py --breakdown`).

Phases are timed as separate compiled functions on the step's real shapes and parameters: target
forward (+ affine-free norm), context encoder forward+backward (every view), predictor forward+backward,
losses (hierarchy pooling + loss terms, forward+backward), optimizer (clipping + AdamW), EMA. Their sum
is printed beside the measured step; the difference ("not attributed") is what running them as one
graph gains or loses.

Op classes are found by recording the calls the model makes during one uncompiled pass of each phase
(Linear/conv -> matmul, MLP activation, attention core = q k^T, softmax, . v or the C++ kernel doing all
three, LayerNorm, gathers), then
timing each distinct call alone on random inputs of its recorded shapes: forward for the target
encoder, forward + backward (vjp with respect to every float input but the images) elsewhere, plus one
more forward inside recomputed blocks. Each op's time is the median of repeats after warm-up. "other" is the step
time less the attributed classes: element-wise glue (residual adds, LayerScale, RoPE, pooling), losses,
optimizer, EMA, copies and scheduling.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

from common import time_median
from hjepa_mlx import kernels, optim
from hjepa_mlx.levels import parent_cells
from hjepa_mlx.losses.total import total_loss
from hjepa_mlx.models import attention as attention_mod
from hjepa_mlx.models import vit as vit_mod
from hjepa_mlx.models.ema import ema_update

CLASSES = ("matmul", "activation", "attention core", "layer norm", "gather")


class Recorder:
    """Collects (class, name, recipe, shapes, mode) of model calls while `active()` is entered."""

    def __init__(self):
        self.calls: Counter = Counter()
        self.mode = "fwd"          # "fwd" (no gradient) or "fwd+bwd"
        self._in_block = 0
        self.recompute = False

    def add(self, cls, name, recipe, shapes):
        mode = self.mode
        if mode == "fwd+bwd" and self.recompute and self._in_block:
            mode = "fwd+bwd+fwd"       # mx.checkpoint recomputes the block's forward in the backward pass
        self.calls[(cls, name, recipe, tuple(tuple(s) for s in shapes), mode)] += 1

    @contextlib.contextmanager
    def active(self):
        rec = self
        orig = {"linear": nn.Linear.__call__, "klinear": kernels.Linear.__call__, "conv": vit_mod.PatchEmbed.__call__,
                "mlp": vit_mod.MLP.__call__,
                "fused": attention_mod.fused_attention, "reference": attention_mod.reference_attention,
                "ln": kernels.layer_norm, "take": mx.take_along_axis, "block": vit_mod.Block.__call__,
                "qkv": kernels.attention}

        def linear(self, x):
            rec.add("matmul", f"linear {x.shape[-1]}->{self.weight.shape[0]}", ("linear", "bias" in self),
                    [x.shape, self.weight.shape] + ([self.bias.shape] if "bias" in self else []))
            return orig["klinear" if isinstance(self, kernels.Linear) else "linear"](self, x)

        def conv(self, x):
            c = self.proj
            rec.add("matmul", "patch embed conv", ("conv", c.stride), [x.shape, c.weight.shape, c.bias.shape])
            return orig["conv"](self, x)

        def mlp(self, x):        # as MLP.__call__: fc1's matmul, then its bias + the activation in one op
            fc1 = self.fc1
            rec.add("matmul", f"linear {x.shape[-1]}->{fc1.weight.shape[0]}", ("linear", False),
                    [x.shape, fc1.weight.shape])
            h = x @ fc1.weight.T
            rec.add("activation", f"bias + {self._activation}", ("act", self._activation), [h.shape, fc1.bias.shape])
            return self.fc2(kernels.bias_activation(h, fc1.bias, self._activation))

        def attend(name):
            def fn(q, k, v, scale, mask=None):
                masked = mask is not None          # the shared-context predictor's block mask
                rec.add("attention core", f"{name} attention N={q.shape[-2]}{' masked' if masked else ''}",
                        ("attn", name, scale, masked), [q.shape, k.shape, v.shape] + ([mask.shape] if masked else []))
                return orig[name](q, k, v, scale, mask)
            return fn

        def attend_qkv(qkv, heads, scale, mask=None):     # the C++ kernel: q k^T, softmax, . v in one op
            masked = mask is not None
            rec.add("attention core", f"kernel attention N={qkv.shape[1]}{' masked' if masked else ''}",
                    ("attn_qkv", heads, scale, masked), [qkv.shape] + ([mask.shape] if masked else []))
            return orig["qkv"](qkv, heads, scale, mask)

        def layer_norm(x, w, b, eps):
            rec.add("layer norm", f"layer norm D={x.shape[-1]}", ("ln", w is not None, eps),
                    [x.shape] + ([w.shape, b.shape] if w is not None else []))
            return orig["ln"](x, w, b, eps)

        def take(a, idx, axis=None, **kw):
            rec.add("gather", "take_along_axis", ("take", axis, idx.dtype), [a.shape, idx.shape])
            return orig["take"](a, idx, axis=axis, **kw)

        def block(self, *args, **kw):
            rec._in_block += 1
            try:
                return orig["block"](self, *args, **kw)
            finally:
                rec._in_block -= 1

        nn.Linear.__call__, kernels.Linear.__call__, vit_mod.PatchEmbed.__call__ = linear, linear, conv
        vit_mod.MLP.__call__ = mlp
        attention_mod.fused_attention, attention_mod.reference_attention = attend("fused"), attend("reference")
        kernels.layer_norm, mx.take_along_axis, vit_mod.Block.__call__ = layer_norm, take, block
        kernels.attention = attend_qkv
        try:
            yield self
        finally:
            nn.Linear.__call__, kernels.Linear.__call__ = orig["linear"], orig["klinear"]
            vit_mod.PatchEmbed.__call__, vit_mod.MLP.__call__ = orig["conv"], orig["mlp"]
            attention_mod.fused_attention, attention_mod.reference_attention = orig["fused"], orig["reference"]
            kernels.layer_norm, mx.take_along_axis, vit_mod.Block.__call__ = orig["ln"], orig["take"], orig["block"]
            kernels.attention = orig["qkv"]


def _op_fn(recipe):
    """The recorded call as a function of arrays, and which of its inputs are differentiable."""
    kind = recipe[0]
    if kind == "linear":
        return (lambda x, w, b: kernels.linear(x, w, b)) if recipe[1] else (lambda x, w: x @ w.T)
    if kind == "conv":
        return lambda x, w, b: kernels.add_bias(mx.conv2d(x, w, stride=recipe[1]), b)
    if kind == "act":
        return lambda h, b: kernels.bias_activation(h, b, recipe[1])
    if kind == "attn":
        core = attention_mod.fused_attention if recipe[1] == "fused" else attention_mod.reference_attention
        return (lambda q, k, v, m: core(q, k, v, recipe[2], m)) if recipe[3] else (lambda q, k, v: core(q, k, v, recipe[2]))
    if kind == "attn_qkv":
        heads, scale = recipe[1], recipe[2]
        return (lambda x, m: kernels.attention(x, heads, scale, m)) if recipe[3] else \
            (lambda x: kernels.attention(x, heads, scale))
    if kind == "ln":
        return (lambda x, w, b: kernels.layer_norm(x, w, b, recipe[2])) if recipe[1] else \
            (lambda x: kernels.layer_norm(x, None, None, recipe[2]))
    raise ValueError(kind)


def time_op(recipe, shapes, mode, repeats: int) -> float:
    """Seconds for one call of the op (forward, or forward + backward (+ recomputed forward))."""
    key = mx.random.key(0)
    if recipe[0] == "take":
        a = mx.random.normal(shapes[0], key=key)
        idx = mx.random.randint(0, shapes[0][recipe[1]], shapes[1], key=key).astype(recipe[2])

        def fn(x):
            return mx.take_along_axis(x, idx, axis=recipe[1])
        args = [a]
    else:
        fn = _op_fn(recipe)
        args = [mx.random.normal(s, key=key) for s in shapes]
    mx.eval(args)
    if mode == "fwd":
        def run():
            mx.eval(fn(*args))
    else:
        out_shape = fn(*args).shape
        cot = mx.random.normal(out_shape, key=key)
        mx.eval(cot)
        if recipe[0] == "conv":
            # The patch embedding's input is the images: the step differentiates its weights only.
            images = args[0]

            def run():
                mx.eval(mx.vjp(lambda w, b: fn(images, w, b), args[1:], [cot]))
        else:
            def run():
                mx.eval(mx.vjp(fn, args, [cot]))
    t = time_median(run, warmup=1, repeats=repeats)["median_s"]
    if mode == "fwd+bwd+fwd":
        t += time_median(lambda: mx.eval(fn(*args)), warmup=1, repeats=repeats)["median_s"]
    return t


def phase_functions(model, state, batch, settings, two_views: bool):
    """{phase: (compiled fn, args)} on the step's first micro-batch."""
    micro = tree_map(lambda x: x[0], batch)
    params, target = state["params"], state["target"]
    images, ctx_idx, tgt_idx = micro["images"], micro["context_idx"], micro["target_idx"]
    level_idx = [parent_cells(tgt_idx, model.grid, level) for level in range(model.num_levels)]
    views = [images] + ([micro["images_view2"]] if two_views else [])

    target_tokens = model.encode_target(target, images)
    gathered = mx.take_along_axis(target_tokens[:, None], tgt_idx[..., None], axis=2)
    model.update(params)
    context = model.encoder(images, ctx_idx)
    pred = model.predictor(context, ctx_idx, tgt_idx)
    mx.eval(target_tokens, gathered, context, pred)
    cot_ctx = mx.random.normal(context.shape, key=mx.random.key(1))
    cot_pred = mx.random.normal(pred.shape, key=mx.random.key(2))

    def target_fwd(tp, imgs):
        return model.encode_target(tp, imgs)

    def context_fb(ep, imgs_list, idx):
        def f(p):
            model.encoder.update(p)
            return sum((model.encoder(im, idx) * cot_ctx).sum() for im in imgs_list)
        return mx.value_and_grad(f)(ep)

    def predictor_fb(pp, ctx, cidx, tidx):
        def f(p, c):
            model.predictor.update(p)
            return (model.predictor(c, cidx, tidx) * cot_pred).sum()
        return mx.value_and_grad(f, argnums=(0, 1))(pp, ctx)

    def losses_fb(pr, tg, ctx, tt):
        def f(p, c):
            levels = model.levels(p, tg, level_idx)
            feats = {"context_pooled_1": c.mean(axis=1), "target_pooled_1": tt.mean(axis=1)}
            if two_views:
                feats["context_pooled_2"] = c[::-1].mean(axis=1)
            return total_loss(model.loss_settings, levels, feats)[0]
        return mx.value_and_grad(f, argnums=(0, 1))(pr, ctx)

    decay = optim.decay_mask(params)
    grads = tree_map(lambda p: 1e-3 * mx.ones_like(p), params)

    def optimizer(p, g, o):        # as the step: norm, finite check, clipping and skip folded into AdamW
        norm = optim.global_norm(g)
        return optim.adamw_update(p, g, o, lr=mx.array(1e-4), weight_decay=mx.array(0.04), betas=settings.betas,
                                  decay_mask=decay, grad_scale=optim.clip_scale(norm, settings.clip_grad),
                                  apply=optim.all_finite(g))

    def ema(t, p):
        return ema_update(t, p["encoder"], mx.array(0.996))

    return {
        "target forward": (target_fwd, (target, images)),
        "context forward+backward": (context_fb, (params["encoder"], views, ctx_idx)),
        "predictor forward+backward": (predictor_fb, (params["predictor"], context, ctx_idx, tgt_idx)),
        "losses forward+backward": (losses_fb, (pred, gathered, context, target_tokens)),
        "optimizer": (optimizer, (params, grads, state["opt"])),
        "ema": (ema, (target, params)),
    }, (images, ctx_idx, tgt_idx, views, target, params, context)


def measure_breakdown(model, state, batch, settings, *, two_views: bool, accumulation: int, recompute: bool,
                      step_s: float, repeats: int) -> dict:
    """Per-phase and per-op-class seconds for one step (k micro-batches), beside the measured step_s."""
    phases, (images, ctx_idx, tgt_idx, views, target, params, context) = phase_functions(
        model, state, batch, settings, two_views)
    per_micro = {"optimizer": 1, "ema": 1}
    phase_s = {}
    for name, (fn, args) in phases.items():
        compiled = mx.compile(fn)
        t = time_median(lambda c=compiled, a=args: mx.eval(c(*a)), warmup=1, repeats=repeats)["median_s"]
        phase_s[name] = t * per_micro.get(name, accumulation)

    rec = Recorder()
    rec.recompute = recompute
    with rec.active():
        rec.mode = "fwd"
        mx.eval(model.encode_target(target, images))
        rec.mode = "fwd+bwd"
        model.encoder.update(params["encoder"])
        for im in views:
            mx.eval(model.encoder(im, ctx_idx))
        rec.recompute = False          # the predictor is not recomputed
        model.predictor.update(params["predictor"])
        mx.eval(model.predictor(context, ctx_idx, tgt_idx))
    ops = []
    class_s = Counter()
    for (cls, name, recipe, shapes, mode), count in sorted(rec.calls.items(), key=lambda kv: kv[0][:2]):
        t = time_op(recipe, [list(s) for s in shapes], mode, max(repeats, 5)) * count * accumulation
        class_s[cls] += t
        ops.append({"class": cls, "op": name, "shapes": shapes, "mode": mode, "calls": count * accumulation,
                    "seconds": t})
    attributed = sum(class_s.values())
    classes = {c: class_s.get(c, 0.0) for c in CLASSES}
    classes["other"] = step_s - attributed
    return {"phases_s": phase_s, "phases_sum_s": sum(phase_s.values()),
            "phases_not_attributed_s": step_s - sum(phase_s.values()),
            "classes_s": classes, "ops": ops, "step_s": step_s}


def gemm_gflops(shapes=((3136, 384, 1536), (1024, 1024, 1024)), repeats: int = 5) -> dict:
    """fp32 GEMM rate measured in this process: {"MxKxN": GFLOP/s} and "best"."""
    out = {}
    for m, k, n in shapes:
        a, b = mx.random.normal((m, k)), mx.random.normal((k, n))
        mx.eval(a, b)
        t = time_median(lambda: mx.eval(a @ b), warmup=2, repeats=repeats)["median_s"]
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / t / 1e9
    out["best"] = max(out.values())
    return out


def print_breakdown(r: dict) -> None:
    step = r["step_s"]
    print(f"  phases (separately compiled), ms per step of {step * 1e3:.0f} ms:")
    for name, t in r["phases_s"].items():
        print(f"    {name:28} {t * 1e3:9.1f} {100 * t / step:6.1f} %")
    print(f"    {'sum of phases':28} {r['phases_sum_s'] * 1e3:9.1f} {100 * r['phases_sum_s'] / step:6.1f} %")
    print("  op classes (each op timed alone at its recorded shapes; 'other' = step - the rest, negative when\n"
          "  ops timed alone cost more than inside the step):")
    for name, t in r["classes_s"].items():
        print(f"    {name:28} {t * 1e3:9.1f} {100 * t / step:6.1f} %")
