// Picks the kernel build for this CPU once, at first use.
#include <cstring>

#include "kernel_table.h"

namespace hjepa_kernels {

namespace {

const KernelTable* detect() {
#if defined(HJEPA_HAVE_AVX2_BUILD)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2 && __builtin_cpu_supports("avx512f")) return &avx512_table();
  if (avx2) return &avx2_table();
#endif
  return &baseline_table();
}

const KernelTable*& current() {
  static const KernelTable* table = detect();
  return table;
}

}  // namespace

const KernelTable& kernels() { return *current(); }

bool select_kernels(const char* isa) {
  if (std::strcmp(isa, "auto") == 0) {
    current() = detect();
    return true;
  }
  if (std::strcmp(isa, baseline_table().isa) == 0) {
    current() = &baseline_table();
    return true;
  }
#if defined(HJEPA_HAVE_AVX2_BUILD)
  const KernelTable* best = detect();   // a build runs here if it is no wider than the widest supported
  if (std::strcmp(isa, avx2_table().isa) == 0 && best != &baseline_table()) {
    current() = &avx2_table();
    return true;
  }
  if (std::strcmp(isa, avx512_table().isa) == 0 && best == &avx512_table()) {
    current() = &avx512_table();
    return true;
  }
#endif
  return false;
}

}  // namespace hjepa_kernels
