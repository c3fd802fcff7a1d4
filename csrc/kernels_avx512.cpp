// The AVX-512 build of math_kernels.h and attention_kernels.h (compiled with -mavx512f and 512-bit
// vectors preferred; used only when the CPU has AVX-512F, AVX2 and FMA).
#define HJEPA_KERNEL_NS avx512
#include "math_kernels.h"
#include "attention_kernels.h"
#include "kernel_table.h"

namespace hjepa_kernels {
const KernelTable& avx512_table() {
  static const KernelTable table{"avx512",
                                 avx512::gelu_forward,   avx512::gelu_backward,
                                 avx512::softmax_forward, avx512::softmax_backward,
                                 avx512::layer_norm_forward, avx512::layer_norm_backward,
                                 avx512::bias_add, avx512::column_sum,
                                 avx512::bias_act_forward, avx512::bias_act_backward, avx512::adamw,
                                 avx512::attention_forward, avx512::attention_backward};
  return table;
}
}  // namespace hjepa_kernels
