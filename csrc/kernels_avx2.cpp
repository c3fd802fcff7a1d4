// The AVX2 + FMA build of math_kernels.h and attention_kernels.h (compiled with -mavx2 -mfma; used only
// when the CPU has both).
#define HJEPA_KERNEL_NS avx2
#include "math_kernels.h"
#include "attention_kernels.h"
#include "kernel_table.h"

namespace hjepa_kernels {
const KernelTable& avx2_table() {
  static const KernelTable table{"avx2+fma",
                                 avx2::gelu_forward,   avx2::gelu_backward,
                                 avx2::softmax_forward, avx2::softmax_backward,
                                 avx2::layer_norm_forward, avx2::layer_norm_backward,
                                 avx2::bias_add, avx2::column_sum,
                                 avx2::bias_act_forward, avx2::bias_act_backward, avx2::adamw,
                                 avx2::attention_forward, avx2::attention_backward};
  return table;
}
}  // namespace hjepa_kernels
