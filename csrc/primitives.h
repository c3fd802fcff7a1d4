// MLX primitives for the CPU kernels: exact GELU, softmax over the last axis, LayerNorm over the last
// axis and multi-head attention from the qkv projection, each with a backward primitive so mx.grad /
// mx.vjp (and mx.compile, mx.checkpoint) stay on the fast kernels. float32 only; CPU only (eval_gpu
// throws: the Python wrapper never puts these on a GPU).
#pragma once

#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace hjepa_kernels {

namespace mx = mlx::core;

mx::array gelu(const mx::array& x, mx::StreamOrDevice s = {});
mx::array gelu_grad(const mx::array& x, const mx::array& y, const mx::array& dy, mx::StreamOrDevice s = {});
mx::array softmax(const mx::array& x, mx::StreamOrDevice s = {});
mx::array softmax_grad(const mx::array& y, const mx::array& dy, mx::StreamOrDevice s = {});
// weight and bias: both (D,) arrays or both absent (affine-free LayerNorm).
mx::array layer_norm(const mx::array& x, const std::optional<mx::array>& weight,
                     const std::optional<mx::array>& bias, float eps, mx::StreamOrDevice s = {});
// Returns {dx} without affine, {dx, dweight, dbias} with it.
std::vector<mx::array> layer_norm_grad(const mx::array& x, const std::optional<mx::array>& weight,
                                       const mx::array& dy, float eps, mx::StreamOrDevice s = {});

// x (..., D) + b (D,) on every row (a Linear's bias after its matmul), and the bias gradient: the sum of
// the rows of dy (..., D) -> (D,).
mx::array bias_add(const mx::array& x, const mx::array& b, mx::StreamOrDevice s = {});
mx::array column_sum(const mx::array& dy, mx::StreamOrDevice s = {});

// act(h + b) for the MLP's first Linear after its matmul: h (..., D), b (D,), kind 0 exact GELU, 1 ReLU.
mx::array bias_act(const mx::array& h, const mx::array& b, int kind, mx::StreamOrDevice s = {});
// {dh, db} from the forward's h, b, y and the cotangent dy.
std::vector<mx::array> bias_act_grad(const mx::array& h, const mx::array& b, const mx::array& y, const mx::array& dy,
                                     int kind, mx::StreamOrDevice s = {});

// One AdamW step of one parameter: p, g, m, v float32 of one shape; scalars (6,) float32
// [lr, weight decay (0: none), 1 - b1^t, 1 - b2^t, grad scale (clipping), keep (0: skipped step, write
// the inputs back)]. Returns {p, m, v}. No gradient (it is the update, not part of the loss).
std::vector<mx::array> adamw(const mx::array& p, const mx::array& g, const mx::array& m, const mx::array& v,
                             const mx::array& scalars, double b1, double b2, double eps, mx::StreamOrDevice s = {});

// Multi-head self-attention from the qkv projection: qkv (B, N, 3 * H * hd) laid out (B, N, 3, H, hd), mask
// an additive (N, N) bias or absent; returns (B, N, H * hd) = softmax(scale q k^T + mask) v per head.
mx::array attention(const mx::array& qkv, int heads, float scale, const std::optional<mx::array>& mask,
                    mx::StreamOrDevice s = {});
// dqkv (B, N, 3 * H * hd) from the forward's out and lse (B, H, N) and the cotangent dout.
mx::array attention_grad(const mx::array& qkv, const std::optional<mx::array>& mask, const mx::array& out,
                         const mx::array& lse, const mx::array& dout, int heads, float scale,
                         mx::StreamOrDevice s = {});

// Common base: CPU evaluation only.
class CpuOnly : public mx::Primitive {
 public:
  explicit CpuOnly(mx::Stream stream) : mx::Primitive(stream) {}
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override;
};

// A CPU primitive whose one parameter (an eps, a kind, a head count and scale) decides equivalence.
template <typename Param>
class CpuOnlyWith : public CpuOnly {
 public:
  CpuOnlyWith(mx::Stream stream, Param param) : CpuOnly(stream), param_(param) {}
  bool is_equivalent(const mx::Primitive& other) const override {
    return param_ == static_cast<const CpuOnlyWith&>(other).param_;
  }

 protected:
  Param param_;
};

struct AttentionParams {
  int heads;
  float scale;
  bool operator==(const AttentionParams&) const = default;
};

class Gelu : public CpuOnly {
 public:
  using CpuOnly::CpuOnly;
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  std::vector<mx::array> jvp(const std::vector<mx::array>& primals, const std::vector<mx::array>& tangents,
                             const std::vector<int>& argnums) override;
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaGelu"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class GeluGrad : public CpuOnly {
 public:
  using CpuOnly::CpuOnly;
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaGeluGrad"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class Softmax : public CpuOnly {
 public:
  using CpuOnly::CpuOnly;
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  std::vector<mx::array> jvp(const std::vector<mx::array>& primals, const std::vector<mx::array>& tangents,
                             const std::vector<int>& argnums) override;
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaSoftmax"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class SoftmaxGrad : public CpuOnly {
 public:
  using CpuOnly::CpuOnly;
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaSoftmaxGrad"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

// Parameter: eps.
class LayerNorm : public CpuOnlyWith<float> {
 public:
  using CpuOnlyWith::CpuOnlyWith;
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaLayerNorm"; }
};

class LayerNormGrad : public CpuOnlyWith<float> {
 public:
  using CpuOnlyWith::CpuOnlyWith;
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaLayerNormGrad"; }
};

// Writes into x's buffer when x is dead after it (the matmul output it follows usually is).
class BiasAdd : public CpuOnly {
 public:
  using CpuOnly::CpuOnly;
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  std::vector<mx::array> jvp(const std::vector<mx::array>& primals, const std::vector<mx::array>& tangents,
                             const std::vector<int>& argnums) override;
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaBiasAdd"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class ColumnSum : public CpuOnly {
 public:
  using CpuOnly::CpuOnly;
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaColumnSum"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

// Parameter: the activation's kind (0 GELU, 1 ReLU).
class BiasAct : public CpuOnlyWith<int> {
 public:
  using CpuOnlyWith::CpuOnlyWith;
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaBiasAct"; }
};

class BiasActGrad : public CpuOnlyWith<int> {
 public:
  using CpuOnlyWith::CpuOnlyWith;
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaBiasActGrad"; }
};

// b1, b2, eps arrive as Python floats (doubles); 1 - b1 and 1 - b2 are rounded from the doubles, as
// optim.adamw_update's `(1.0 - b1) * g` is, so the two paths give the same bits.
class AdamW : public CpuOnly {
 public:
  AdamW(mx::Stream stream, double b1, double b2, double eps)
      : CpuOnly(stream), b1_(static_cast<float>(b1)), b2_(static_cast<float>(b2)),
        one_b1_(static_cast<float>(1.0 - b1)), one_b2_(static_cast<float>(1.0 - b2)), eps_(static_cast<float>(eps)) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaAdamW"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const AdamW&>(other);
    return b1_ == o.b1_ && b2_ == o.b2_ && eps_ == o.eps_;
  }

 private:
  float b1_, b2_, one_b1_, one_b2_, eps_;
};

// Outputs: out (B, N, H * hd) and lse (B, H, N), the rows' log-sum-exp the backward rebuilds p from.
class Attention : public CpuOnlyWith<AttentionParams> {
 public:
  using CpuOnlyWith::CpuOnlyWith;
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaAttention"; }
};

// Inputs: qkv, out, lse, dout[, mask]; output dqkv.
class AttentionGrad : public CpuOnlyWith<AttentionParams> {
 public:
  using CpuOnlyWith::CpuOnlyWith;
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaAttentionGrad"; }
};

}  // namespace hjepa_kernels
