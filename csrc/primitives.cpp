#include "primitives.h"

#include <algorithm>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "kernel_table.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/utils.h"
#include "thread_pool.h"

namespace hjepa_kernels {

namespace {

// Below these sizes a kernel call runs on the stream thread alone (waking workers costs ~10 us).
constexpr size_t kElementGrain = 1 << 15;   // elements per part, element-wise kernels
constexpr size_t kRowElementGrain = 1 << 14;  // elements per part, row kernels

void check_float32(const mx::array& x, const char* op) {
  if (x.dtype() != mx::float32) {
    throw std::invalid_argument(std::string("[hjepa_kernels.") + op + "] only float32 is supported");
  }
}

// Row-contiguous view of x on stream s (no copy when x already is).
mx::array dense(const mx::array& x, mx::StreamOrDevice s) { return mx::contiguous(x, false, s); }

size_t rows_of(const mx::array& x) { return x.ndim() == 0 ? 1 : x.size() / x.shape(-1); }
size_t cols_of(const mx::array& x) { return x.ndim() == 0 ? 1 : x.shape(-1); }

void allocate(mx::array& out) { out.set_data(mx::allocator::malloc(out.nbytes())); }

// out takes x's buffer when x is dead after this op, else new memory.
void reuse_or_allocate(const mx::array& x, mx::array& out) {
  if (x.is_donatable() && x.flags().row_contiguous) {
    out.copy_shared_buffer(x);
  } else {
    allocate(out);
  }
}

// Allocates every output and registers inputs and outputs with the stream's CPU encoder (so MLX keeps
// them alive until the queued work has run); the caller then queues the work with encoder.dispatch.
mx::cpu::CommandEncoder& prepare(const mx::Stream& stream, const std::vector<mx::array>& inputs,
                                 std::vector<mx::array>& outputs) {
  auto& encoder = mx::cpu::get_command_encoder(stream);
  for (const auto& in : inputs) encoder.set_input_array(in);
  for (auto& out : outputs) {
    allocate(out);
    encoder.set_output_array(out);
  }
  return encoder;
}

// As `prepare`, but outputs[0] takes inputs[reuse]'s buffer when that input is dead after this op.
mx::cpu::CommandEncoder& prepare_in_place(const mx::Stream& stream, const std::vector<mx::array>& inputs,
                                          std::vector<mx::array>& outputs, size_t reuse) {
  reuse_or_allocate(inputs[reuse], outputs[0]);   // before the encoder holds a reference to the input
  for (size_t i = 1; i < outputs.size(); ++i) allocate(outputs[i]);
  auto& encoder = mx::cpu::get_command_encoder(stream);
  for (const auto& in : inputs) encoder.set_input_array(in);
  for (auto& out : outputs) encoder.set_output_array(out);
  return encoder;
}

// Runs row_fn(begin, end) over the rows of a rows x cols problem, in parallel when it is large.
size_t row_grain(size_t cols) { return std::max<size_t>(1, kRowElementGrain / std::max<size_t>(cols, 1)); }

void parallel_rows(size_t rows, size_t cols, const std::function<void(size_t, size_t)>& row_fn) {
  parallel_for(rows, row_grain(cols), row_fn);
}

}  // namespace

void CpuOnly::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error(std::string("[hjepa_kernels] ") + name() + " runs on the CPU only");
}

// ---------------------------------------------------------------- GELU

mx::array gelu(const mx::array& x, mx::StreamOrDevice s) {
  check_float32(x, "gelu");
  return mx::array(x.shape(), x.dtype(), std::make_shared<Gelu>(mx::to_stream(s)), {dense(x, s)});
}

mx::array gelu_grad(const mx::array& x, const mx::array& y, const mx::array& dy, mx::StreamOrDevice s) {
  check_float32(x, "gelu_grad");
  check_float32(y, "gelu_grad");
  check_float32(dy, "gelu_grad");
  if (x.shape() != dy.shape() || x.shape() != y.shape())
    throw std::invalid_argument("[hjepa_kernels.gelu_grad] x, y and dy differ in shape");
  return mx::array(x.shape(), x.dtype(), std::make_shared<GeluGrad>(mx::to_stream(s)),
                   {dense(x, s), dense(y, s), dense(dy, s)});
}

void Gelu::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& x = inputs[0];
  auto& out = outputs[0];
  auto& encoder = prepare(stream(), inputs, outputs);
  encoder.dispatch([xp = x.data<float>(), yp = out.data<float>(), n = x.size()]() {
    const auto& k = kernels();
    parallel_for(n, kElementGrain, [&](size_t b, size_t e) { k.gelu_forward(xp + b, yp + b, e - b); });
  });
}

// The derivative reads Phi(x) back from the forward's output (see gelu_backward): the vjp has it; the jvp
// (not on the training path) runs the forward again for it.
std::vector<mx::array> Gelu::jvp(const std::vector<mx::array>& primals, const std::vector<mx::array>& tangents,
                                 const std::vector<int>&) {
  return {gelu_grad(primals[0], gelu(primals[0], stream()), tangents[0], stream())};
}

std::vector<mx::array> Gelu::vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                                 const std::vector<int>&, const std::vector<mx::array>& outputs) {
  return {gelu_grad(primals[0], outputs[0], cotangents[0], stream())};
}

void GeluGrad::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& x = inputs[0];
  const auto& y = inputs[1];
  const auto& dy = inputs[2];
  auto& out = outputs[0];
  auto& encoder = prepare(stream(), inputs, outputs);
  encoder.dispatch([xp = x.data<float>(), yp = y.data<float>(), gp = dy.data<float>(), dp = out.data<float>(),
                    n = x.size()]() {
    const auto& k = kernels();
    parallel_for(n, kElementGrain,
                 [&](size_t b, size_t e) { k.gelu_backward(xp + b, yp + b, gp + b, dp + b, e - b); });
  });
}

// ---------------------------------------------------------------- softmax

mx::array softmax(const mx::array& x, mx::StreamOrDevice s) {
  check_float32(x, "softmax");
  if (x.ndim() == 0) throw std::invalid_argument("[hjepa_kernels.softmax] needs at least one axis");
  return mx::array(x.shape(), x.dtype(), std::make_shared<Softmax>(mx::to_stream(s)), {dense(x, s)});
}

mx::array softmax_grad(const mx::array& y, const mx::array& dy, mx::StreamOrDevice s) {
  check_float32(y, "softmax_grad");
  check_float32(dy, "softmax_grad");
  if (y.shape() != dy.shape()) throw std::invalid_argument("[hjepa_kernels.softmax_grad] y and dy differ in shape");
  return mx::array(y.shape(), y.dtype(), std::make_shared<SoftmaxGrad>(mx::to_stream(s)),
                   {dense(y, s), dense(dy, s)});
}

void Softmax::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& x = inputs[0];
  auto& out = outputs[0];
  auto& encoder = prepare(stream(), inputs, outputs);
  encoder.dispatch([xp = x.data<float>(), yp = out.data<float>(), rows = rows_of(x), cols = cols_of(x)]() {
    const auto& k = kernels();
    parallel_rows(rows, cols, [&](size_t b, size_t e) {
      k.softmax_forward(xp + b * cols, yp + b * cols, e - b, cols);
    });
  });
}

// The softmax Jacobian is symmetric, so the tangent map and the cotangent map are the same formula.
std::vector<mx::array> Softmax::jvp(const std::vector<mx::array>& primals, const std::vector<mx::array>& tangents,
                                    const std::vector<int>&) {
  return {softmax_grad(softmax(primals[0], stream()), tangents[0], stream())};
}

std::vector<mx::array> Softmax::vjp(const std::vector<mx::array>&, const std::vector<mx::array>& cotangents,
                                    const std::vector<int>&, const std::vector<mx::array>& outputs) {
  return {softmax_grad(outputs[0], cotangents[0], stream())};
}

void SoftmaxGrad::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& y = inputs[0];
  const auto& dy = inputs[1];
  auto& out = outputs[0];
  auto& encoder = prepare(stream(), inputs, outputs);
  encoder.dispatch([yp = y.data<float>(), gp = dy.data<float>(), dp = out.data<float>(), rows = rows_of(y),
                    cols = cols_of(y)]() {
    const auto& k = kernels();
    parallel_rows(rows, cols, [&](size_t b, size_t e) {
      k.softmax_backward(yp + b * cols, gp + b * cols, dp + b * cols, e - b, cols);
    });
  });
}

// ---------------------------------------------------------------- LayerNorm

static void check_affine(const mx::array& x, const std::optional<mx::array>& weight,
                         const std::optional<mx::array>& bias, bool need_bias) {
  check_float32(x, "layer_norm");
  if (x.ndim() == 0) throw std::invalid_argument("[hjepa_kernels.layer_norm] needs at least one axis");
  if (need_bias && weight.has_value() != bias.has_value()) {
    throw std::invalid_argument("[hjepa_kernels.layer_norm] give both weight and bias, or neither");
  }
  for (const auto* p : {&weight, &bias}) {
    if (p->has_value()) {
      check_float32(**p, "layer_norm");
      if ((*p)->ndim() != 1 || (*p)->shape(0) != x.shape(-1)) {
        throw std::invalid_argument("[hjepa_kernels.layer_norm] weight and bias must be (D,) for x (..., D)");
      }
    }
  }
}

mx::array layer_norm(const mx::array& x, const std::optional<mx::array>& weight,
                     const std::optional<mx::array>& bias, float eps, mx::StreamOrDevice s) {
  check_affine(x, weight, bias, true);
  std::vector<mx::array> inputs{dense(x, s)};
  if (weight) {
    inputs.push_back(dense(*weight, s));
    inputs.push_back(dense(*bias, s));
  }
  return mx::array(x.shape(), x.dtype(), std::make_shared<LayerNorm>(mx::to_stream(s), eps), std::move(inputs));
}

std::vector<mx::array> layer_norm_grad(const mx::array& x, const std::optional<mx::array>& weight,
                                       const mx::array& dy, float eps, mx::StreamOrDevice s) {
  check_affine(x, weight, std::nullopt, false);
  check_float32(dy, "layer_norm_grad");
  if (x.shape() != dy.shape()) throw std::invalid_argument("[hjepa_kernels.layer_norm_grad] x and dy differ in shape");
  auto prim = std::make_shared<LayerNormGrad>(mx::to_stream(s), eps);
  if (!weight) return {mx::array(x.shape(), x.dtype(), prim, {dense(x, s), dense(dy, s)})};
  const mx::Shape d{x.shape(-1)};
  return mx::array::make_arrays({x.shape(), d, d}, {x.dtype(), x.dtype(), x.dtype()}, prim,
                                {dense(x, s), dense(dy, s), dense(*weight, s)});
}

void LayerNorm::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& x = inputs[0];
  auto& out = outputs[0];
  auto& encoder = prepare(stream(), inputs, outputs);
  const float* wp = inputs.size() == 3 ? inputs[1].data<float>() : nullptr;
  const float* bp = inputs.size() == 3 ? inputs[2].data<float>() : nullptr;
  encoder.dispatch([xp = x.data<float>(), wp, bp, yp = out.data<float>(), rows = rows_of(x), cols = cols_of(x),
                    eps = param_]() {
    const auto& k = kernels();
    parallel_rows(rows, cols, [&](size_t b, size_t e) {
      k.layer_norm_forward(xp + b * cols, wp, bp, yp + b * cols, e - b, cols, eps);
    });
  });
}

std::vector<mx::array> LayerNorm::vjp(const std::vector<mx::array>& primals,
                                      const std::vector<mx::array>& cotangents, const std::vector<int>& argnums,
                                      const std::vector<mx::array>&) {
  std::optional<mx::array> weight;
  if (primals.size() == 3) weight = primals[1];
  auto grads = layer_norm_grad(primals[0], weight, cotangents[0], param_, stream());
  std::vector<mx::array> out;
  for (int a : argnums) out.push_back(grads.at(a));   // 0: x, 1: weight, 2: bias
  return out;
}

void LayerNormGrad::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& x = inputs[0];
  const auto& dy = inputs[1];
  const bool affine = inputs.size() == 3;
  auto& encoder = prepare(stream(), inputs, outputs);
  const float* wp = affine ? inputs[2].data<float>() : nullptr;
  float* dwp = affine ? outputs[1].data<float>() : nullptr;
  float* dbp = affine ? outputs[2].data<float>() : nullptr;
  encoder.dispatch([xp = x.data<float>(), gp = dy.data<float>(), wp, dxp = outputs[0].data<float>(), dwp, dbp,
                    rows = rows_of(x), cols = cols_of(x), eps = param_]() {
    const auto& k = kernels();
    // Each part sums its rows' weight and bias gradients into its own slot (the part's index, not the
    // order parts happen to start in); the slots are added in index order, so the result is the same
    // bits whichever thread ran which part. Unused slots hold zeros, which add exactly.
    const int slots = max_parts();
    std::vector<float> partial(dwp ? static_cast<size_t>(slots) * 2 * cols : 0, 0.0f);
    std::vector<float> scratch(static_cast<size_t>(slots) * cols);
    parallel_parts(rows, row_grain(cols), [&](int slot, size_t b, size_t e) {
      float* dw = dwp ? partial.data() + static_cast<size_t>(slot) * 2 * cols : nullptr;
      float* db = dwp ? dw + cols : nullptr;
      k.layer_norm_backward(xp + b * cols, wp, gp + b * cols, dxp + b * cols, dw, db,
                            scratch.data() + static_cast<size_t>(slot) * cols, e - b, cols, eps);
    });
    if (dwp) {
      for (size_t i = 0; i < cols; ++i) dwp[i] = dbp[i] = 0.0f;
      for (int p = 0; p < slots; ++p) {
        const float* dw = partial.data() + static_cast<size_t>(p) * 2 * cols;
        for (size_t i = 0; i < cols; ++i) {
          dwp[i] += dw[i];
          dbp[i] += dw[cols + i];
        }
      }
    }
  });
}

// ---------------------------------------------------------------- bias

namespace {

void check_bias(const mx::array& x, const mx::array& b, const char* op) {
  check_float32(x, op);
  check_float32(b, op);
  if (x.ndim() == 0 || b.ndim() != 1 || b.shape(0) != x.shape(-1)) {
    throw std::invalid_argument(std::string("[hjepa_kernels.") + op + "] b must be (D,) for x (..., D)");
  }
}

// out[0:cols] = the sum of the `slots` partial rows in slot order: the same bits whichever thread filled which.
void add_slots(const std::vector<float>& partial, int slots, size_t cols, float* out) {
  for (size_t i = 0; i < cols; ++i) out[i] = 0.0f;
  for (int p = 0; p < slots; ++p) {
    const float* part = partial.data() + static_cast<size_t>(p) * cols;
    for (size_t i = 0; i < cols; ++i) out[i] += part[i];
  }
}

}  // namespace

mx::array bias_add(const mx::array& x, const mx::array& b, mx::StreamOrDevice s) {
  check_bias(x, b, "bias_add");
  return mx::array(x.shape(), x.dtype(), std::make_shared<BiasAdd>(mx::to_stream(s)), {dense(x, s), dense(b, s)});
}

mx::array column_sum(const mx::array& dy, mx::StreamOrDevice s) {
  check_float32(dy, "column_sum");
  if (dy.ndim() == 0) throw std::invalid_argument("[hjepa_kernels.column_sum] needs at least one axis");
  return mx::array({dy.shape(-1)}, dy.dtype(), std::make_shared<ColumnSum>(mx::to_stream(s)), {dense(dy, s)});
}

void BiasAdd::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& x = inputs[0];
  auto& out = outputs[0];
  // A dead input's buffer becomes the output (as MLX's own element-wise ops do): no new page to touch.
  auto& encoder = prepare_in_place(stream(), inputs, outputs, 0);
  encoder.dispatch([xp = x.data<float>(), bp = inputs[1].data<float>(), yp = out.data<float>(), rows = rows_of(x),
                    cols = cols_of(x)]() {
    const auto& k = kernels();
    parallel_rows(rows, cols, [&](size_t b, size_t e) { k.bias_add(xp + b * cols, bp, yp + b * cols, e - b, cols); });
  });
}

// The tangent of x + b: the tangents' sum, broadcast to x's shape (b's alone is (D,)).
std::vector<mx::array> BiasAdd::jvp(const std::vector<mx::array>& primals, const std::vector<mx::array>& tangents,
                                    const std::vector<int>& argnums) {
  std::optional<mx::array> out;
  for (size_t i = 0; i < argnums.size(); ++i) {
    out = out ? mx::add(*out, tangents[i], stream()) : tangents[i];
  }
  return {mx::broadcast_to(*out, primals[0].shape(), stream())};
}

std::vector<mx::array> BiasAdd::vjp(const std::vector<mx::array>&, const std::vector<mx::array>& cotangents,
                                    const std::vector<int>& argnums, const std::vector<mx::array>&) {
  std::vector<mx::array> grads;
  for (int a : argnums) grads.push_back(a == 0 ? cotangents[0] : column_sum(cotangents[0], stream()));
  return grads;
}

void ColumnSum::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& dy = inputs[0];
  auto& encoder = prepare(stream(), inputs, outputs);
  encoder.dispatch([gp = dy.data<float>(), op = outputs[0].data<float>(), rows = rows_of(dy), cols = cols_of(dy)]() {
    const auto& k = kernels();
    const int slots = max_parts();    // one partial sum per part slot (see add_slots)
    std::vector<float> partial(static_cast<size_t>(slots) * cols, 0.0f);
    parallel_parts(rows, row_grain(cols), [&](int slot, size_t b, size_t e) {
      k.column_sum(gp + b * cols, partial.data() + static_cast<size_t>(slot) * cols, e - b, cols);
    });
    add_slots(partial, slots, cols, op);
  });
}

// ---------------------------------------------------------------- bias + activation

mx::array bias_act(const mx::array& h, const mx::array& b, int kind, mx::StreamOrDevice s) {
  check_bias(h, b, "bias_act");
  if (kind != 0 && kind != 1) throw std::invalid_argument("[hjepa_kernels.bias_act] kind is 0 (GELU) or 1 (ReLU)");
  return mx::array(h.shape(), h.dtype(), std::make_shared<BiasAct>(mx::to_stream(s), kind), {dense(h, s), dense(b, s)});
}

std::vector<mx::array> bias_act_grad(const mx::array& h, const mx::array& b, const mx::array& y, const mx::array& dy,
                                     int kind, mx::StreamOrDevice s) {
  check_bias(h, b, "bias_act_grad");
  check_float32(y, "bias_act_grad");
  check_float32(dy, "bias_act_grad");
  if (y.shape() != h.shape() || dy.shape() != h.shape()) {
    throw std::invalid_argument("[hjepa_kernels.bias_act_grad] h, y and dy differ in shape");
  }
  return mx::array::make_arrays({h.shape(), b.shape()}, {mx::float32, mx::float32},
                                std::make_shared<BiasActGrad>(mx::to_stream(s), kind),
                                {dense(h, s), dense(b, s), dense(y, s), dense(dy, s)});
}

void BiasAct::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& h = inputs[0];
  auto& out = outputs[0];
  auto& encoder = prepare_in_place(stream(), inputs, outputs, 0);
  encoder.dispatch([hp = h.data<float>(), bp = inputs[1].data<float>(), yp = out.data<float>(), rows = rows_of(h),
                    cols = cols_of(h), kind = param_]() {
    const auto& k = kernels();
    parallel_rows(rows, cols, [&](size_t b, size_t e) {
      k.bias_act_forward(kind, hp + b * cols, bp, yp + b * cols, e - b, cols);
    });
  });
}

std::vector<mx::array> BiasAct::vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                                    const std::vector<int>& argnums, const std::vector<mx::array>& outputs) {
  auto grads = bias_act_grad(primals[0], primals[1], outputs[0], cotangents[0], param_, stream());
  std::vector<mx::array> out;
  for (int a : argnums) out.push_back(grads.at(a));   // 0: h, 1: b
  return out;
}

void BiasActGrad::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& dy = inputs[3];
  auto& encoder = prepare_in_place(stream(), inputs, outputs, 3);   // dh into dy's buffer when dy is dead
  encoder.dispatch([hp = inputs[0].data<float>(), bp = inputs[1].data<float>(), yp = inputs[2].data<float>(),
                    gp = dy.data<float>(), dhp = outputs[0].data<float>(), dbp = outputs[1].data<float>(),
                    rows = rows_of(dy), cols = cols_of(dy), kind = param_]() {
    const auto& k = kernels();
    const int slots = max_parts();    // per-slot partial bias gradients (see add_slots)
    std::vector<float> partial(static_cast<size_t>(slots) * cols, 0.0f);
    parallel_parts(rows, row_grain(cols), [&](int slot, size_t b, size_t e) {
      k.bias_act_backward(kind, hp + b * cols, bp, yp + b * cols, gp + b * cols, dhp + b * cols,
                          partial.data() + static_cast<size_t>(slot) * cols, e - b, cols);
    });
    add_slots(partial, slots, cols, dbp);
  });
}

// ---------------------------------------------------------------- AdamW

std::vector<mx::array> adamw(const mx::array& p, const mx::array& g, const mx::array& m, const mx::array& v,
                             const mx::array& scalars, double b1, double b2, double eps, mx::StreamOrDevice s) {
  for (const auto* a : {&p, &g, &m, &v, &scalars}) check_float32(*a, "adamw");
  if (g.shape() != p.shape() || m.shape() != p.shape() || v.shape() != p.shape()) {
    throw std::invalid_argument("[hjepa_kernels.adamw] p, g, m and v differ in shape");
  }
  if (scalars.ndim() != 1 || scalars.shape(0) != 6) {
    throw std::invalid_argument("[hjepa_kernels.adamw] scalars must be (6,): lr, wd, c1, c2, grad scale, keep");
  }
  return mx::array::make_arrays({p.shape(), p.shape(), p.shape()}, {mx::float32, mx::float32, mx::float32},
                                std::make_shared<AdamW>(mx::to_stream(s), b1, b2, eps),
                                {dense(p, s), dense(g, s), dense(m, s), dense(v, s), dense(scalars, s)});
}

void AdamW::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& encoder = prepare(stream(), inputs, outputs);
  encoder.dispatch([pp = inputs[0].data<float>(), gp = inputs[1].data<float>(), mp = inputs[2].data<float>(),
                    vp = inputs[3].data<float>(), sp = inputs[4].data<float>(), po = outputs[0].data<float>(),
                    mo = outputs[1].data<float>(), vo = outputs[2].data<float>(), n = inputs[0].size(),
                    b1 = b1_, b2 = b2_, one_b1 = one_b1_, one_b2 = one_b2_, eps = eps_]() {
    const float s[11] = {sp[0], sp[1], sp[2], sp[3], sp[4], sp[5], b1, b2, one_b1, one_b2, eps};
    const auto& k = kernels();
    parallel_for(n, kElementGrain, [&](size_t b, size_t e) {
      k.adamw(pp + b, gp + b, mp + b, vp + b, po + b, mo + b, vo + b, e - b, s);
    });
  });
}

// ---------------------------------------------------------------- attention

namespace {

AttentionShape attention_shape(const mx::array& qkv, int heads, float scale) {
  const size_t width = qkv.shape(2) / 3;
  return {static_cast<size_t>(qkv.shape(0)), static_cast<size_t>(qkv.shape(1)), static_cast<size_t>(heads),
          width / static_cast<size_t>(heads), scale};
}

void check_attention(const mx::array& qkv, int heads, const std::optional<mx::array>& mask) {
  check_float32(qkv, "attention");
  if (qkv.ndim() != 3 || heads < 1 || qkv.shape(2) % (3 * heads) != 0 || qkv.shape(1) < 1) {
    throw std::invalid_argument("[hjepa_kernels.attention] qkv must be (B, N, 3 * heads * head_dim)");
  }
  if (mask) {
    check_float32(*mask, "attention");
    if (mask->ndim() != 2 || mask->shape(0) != qkv.shape(1) || mask->shape(1) != qkv.shape(1)) {
      throw std::invalid_argument("[hjepa_kernels.attention] the mask must be (N, N) for qkv (B, N, ...)");
    }
  }
}

// Below this many multiply-adds a call runs on the stream thread alone.
constexpr size_t kAttentionJobGrain = 1 << 16;

size_t attention_grain(const AttentionShape& s) {
  return std::max<size_t>(1, kAttentionJobGrain / std::max<size_t>(1, s.tokens * s.tokens * s.head_dim));
}

}  // namespace

mx::array attention(const mx::array& qkv, int heads, float scale, const std::optional<mx::array>& mask,
                    mx::StreamOrDevice s) {
  check_attention(qkv, heads, mask);
  std::vector<mx::array> inputs{dense(qkv, s)};
  if (mask) inputs.push_back(dense(*mask, s));
  const int b = qkv.shape(0), n = qkv.shape(1), d = qkv.shape(2) / 3;
  auto outputs = mx::array::make_arrays({{b, n, d}, {b, heads, n}}, {mx::float32, mx::float32},
                                        std::make_shared<Attention>(mx::to_stream(s), AttentionParams{heads, scale}),
                                        std::move(inputs));
  return outputs[0];
}

mx::array attention_grad(const mx::array& qkv, const std::optional<mx::array>& mask, const mx::array& out,
                         const mx::array& lse, const mx::array& dout, int heads, float scale, mx::StreamOrDevice s) {
  check_attention(qkv, heads, mask);
  for (const auto* a : {&out, &lse, &dout}) check_float32(*a, "attention_grad");
  if (dout.shape() != out.shape()) throw std::invalid_argument("[hjepa_kernels.attention_grad] dout and out differ");
  std::vector<mx::array> inputs{dense(qkv, s), dense(out, s), dense(lse, s), dense(dout, s)};
  if (mask) inputs.push_back(dense(*mask, s));
  return mx::array(qkv.shape(), mx::float32, std::make_shared<AttentionGrad>(mx::to_stream(s), AttentionParams{heads, scale}),
                   std::move(inputs));
}

void Attention::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& qkv = inputs[0];
  const float* mp = inputs.size() == 2 ? inputs[1].data<float>() : nullptr;
  auto& encoder = prepare(stream(), inputs, outputs);
  const AttentionShape shape = attention_shape(qkv, param_.heads, param_.scale);
  encoder.dispatch([shape, xp = qkv.data<float>(), mp, op = outputs[0].data<float>(),
                    lp = outputs[1].data<float>()]() {
    const auto& k = kernels();
    parallel_for(shape.batch * shape.heads, attention_grain(shape),
                 [&](size_t b, size_t e) { k.attention_forward(shape, xp, mp, op, lp, b, e); });
  });
}

// The mask is a constant bias (no gradient flows into it: its cotangent is zero).
std::vector<mx::array> Attention::vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                                      const std::vector<int>& argnums, const std::vector<mx::array>& outputs) {
  std::optional<mx::array> mask;
  if (primals.size() == 2) mask = primals[1];
  std::vector<mx::array> grads;
  for (int a : argnums) {
    if (a == 0) {
      grads.push_back(attention_grad(primals[0], mask, outputs[0], outputs[1], cotangents[0], param_.heads, param_.scale,
                                     stream()));
    } else {
      grads.push_back(mx::zeros_like(primals[a], stream()));
    }
  }
  return grads;
}

void AttentionGrad::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto& qkv = inputs[0];
  const float* mp = inputs.size() == 5 ? inputs[4].data<float>() : nullptr;
  auto& encoder = prepare(stream(), inputs, outputs);
  const AttentionShape shape = attention_shape(qkv, param_.heads, param_.scale);
  encoder.dispatch([shape, xp = qkv.data<float>(), mp, op = inputs[1].data<float>(), lp = inputs[2].data<float>(),
                    gp = inputs[3].data<float>(), dp = outputs[0].data<float>()]() {
    const auto& k = kernels();
    parallel_for(shape.batch * shape.heads, attention_grain(shape),
                 [&](size_t b, size_t e) { k.attention_backward(shape, xp, mp, op, lp, gp, dp, b, e); });
  });
}

}  // namespace hjepa_kernels
