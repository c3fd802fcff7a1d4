// The problem one attention kernel call solves (see attention_kernels.h).
#pragma once

#include <cstddef>

namespace hjepa_kernels {

struct AttentionShape {
  size_t batch;      // images B
  size_t tokens;     // N
  size_t heads;      // H
  size_t head_dim;   // hd; qkv is (B, N, 3, H, hd), out (B, N, H, hd)
  float scale;       // multiplies q k^T before the mask is added
};

}  // namespace hjepa_kernels
