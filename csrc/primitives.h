// MLX primitives for the CPU kernels: exact GELU, softmax over the last axis, LayerNorm over the last
// axis, each with a backward primitive so mx.grad / mx.vjp (and mx.compile, mx.checkpoint) stay on the
// fast kernels. float32 only; CPU only (eval_gpu throws: the Python wrapper never puts these on a GPU).
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

// Common base: CPU evaluation only.
class CpuOnly : public mx::Primitive {
 public:
  explicit CpuOnly(mx::Stream stream) : mx::Primitive(stream) {}
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override;
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

class LayerNorm : public CpuOnly {
 public:
  LayerNorm(mx::Stream stream, float eps) : CpuOnly(stream), eps_(eps) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaLayerNorm"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return eps_ == static_cast<const LayerNorm&>(other).eps_;
  }

 private:
  float eps_;
};

class LayerNormGrad : public CpuOnly {
 public:
  LayerNormGrad(mx::Stream stream, float eps) : CpuOnly(stream), eps_(eps) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override;
  const char* name() const override { return "HjepaLayerNormGrad"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return eps_ == static_cast<const LayerNormGrad&>(other).eps_;
  }

 private:
  float eps_;
};

}  // namespace hjepa_kernels
