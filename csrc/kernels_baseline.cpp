// The portable build of math_kernels.h and attention_kernels.h (x86-64 baseline SSE2, or the target's
// default ISA elsewhere).
#define HJEPA_KERNEL_NS baseline
#include "math_kernels.h"
#include "attention_kernels.h"
#include "kernel_table.h"

namespace hjepa_kernels {
const KernelTable& baseline_table() {
  static const KernelTable table{"baseline",
                                 baseline::gelu_forward,   baseline::gelu_backward,
                                 baseline::softmax_forward, baseline::softmax_backward,
                                 baseline::layer_norm_forward, baseline::layer_norm_backward,
                                 baseline::bias_add, baseline::column_sum,
                                 baseline::bias_act_forward, baseline::bias_act_backward, baseline::adamw,
                                 baseline::attention_forward, baseline::attention_backward};
  return table;
}
}  // namespace hjepa_kernels
