// One set of kernel entry points per instruction-set build, chosen once at run time.
#pragma once

#include <cstddef>

#include "attention_shape.h"

namespace hjepa_kernels {

struct KernelTable {
  const char* isa;
  void (*gelu_forward)(const float*, float*, size_t);
  void (*gelu_backward)(const float*, const float*, const float*, float*, size_t);   // x, y = gelu(x), dy, dx
  void (*softmax_forward)(const float*, float*, size_t, size_t);
  void (*softmax_backward)(const float*, const float*, float*, size_t, size_t);
  void (*layer_norm_forward)(const float*, const float*, const float*, float*, size_t, size_t, float);
  void (*layer_norm_backward)(const float*, const float*, const float*, float*, float*, float*, float*, size_t,
                              size_t, float);
  void (*bias_add)(const float*, const float*, float*, size_t, size_t);    // x, b, y (may be x), rows, cols
  void (*column_sum)(const float*, float*, size_t, size_t);               // x, acc (+=), rows, cols
  // kind (0 GELU, 1 ReLU), h, b, y (may be h), rows, cols
  void (*bias_act_forward)(int, const float*, const float*, float*, size_t, size_t);
  // kind, h, b, y, dy, dh (may be dy), db (+=), rows, cols
  void (*bias_act_backward)(int, const float*, const float*, const float*, const float*, float*, float*, size_t,
                            size_t);
  // p, g, m, v, p_out, m_out, v_out, n, scalars [lr, wd, c1, c2, grad_scale, keep, b1, b2, 1-b1, 1-b2, eps]
  void (*adamw)(const float*, const float*, const float*, const float*, float*, float*, float*, size_t,
                const float*);
  // qkv, mask (N x N additive, or null), out, lse, jobs [begin, end) of the B * H (image, head) pairs
  void (*attention_forward)(const AttentionShape&, const float*, const float*, float*, float*, size_t, size_t);
  // qkv, mask, out, lse, dout, dqkv, jobs [begin, end)
  void (*attention_backward)(const AttentionShape&, const float*, const float*, const float*, const float*,
                             const float*, float*, size_t, size_t);
};

const KernelTable& baseline_table();
#if defined(HJEPA_HAVE_AVX2_BUILD)
const KernelTable& avx2_table();
const KernelTable& avx512_table();
#endif

// The table in use: the widest build the CPU supports (AVX-512, AVX2+FMA), else baseline.
const KernelTable& kernels();
// Force one build ("baseline", "avx2+fma", "avx512") or "auto"; returns false if that build is unavailable here.
bool select_kernels(const char* isa);

}  // namespace hjepa_kernels
