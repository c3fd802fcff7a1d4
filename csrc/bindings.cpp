// Python module hjepa_mlx._kernels: the ops of primitives.h on mlx.core arrays.
//
// Arrays cross into C++ through mlx.core's own nanobind type (shared through the "mlx" nanobind domain),
// so this module must be built with a nanobind whose ABI matches the installed mlx (see CMakeLists.txt).
#include <nanobind/nanobind.h>
#include <string>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "kernel_table.h"
#include "mlx/version.h"
#include "primitives.h"
#include "thread_pool.h"

namespace nb = nanobind;
using namespace nb::literals;
namespace hk = hjepa_kernels;

NB_MODULE(_kernels, m) {
  m.doc() = "Fast float32 CPU kernels (exact GELU, softmax, LayerNorm, attention) as MLX primitives.";
  // The MLX version whose headers this module was compiled against; MLX has no stable C++ ABI, so the
  // Python side refuses to use the module under any other version.
  m.attr("mlx_version") = std::to_string(MLX_VERSION_MAJOR) + "." + std::to_string(MLX_VERSION_MINOR) + "." +
                          std::to_string(MLX_VERSION_PATCH);
  m.def("gelu", &hk::gelu, "x"_a, nb::kw_only(), "stream"_a = nb::none(),
        "Exact GELU x * Phi(x) (erf form).");
  m.def("gelu_grad", &hk::gelu_grad, "x"_a, "y"_a, "dy"_a, nb::kw_only(), "stream"_a = nb::none(),
        "dy * GELU'(x), y = gelu(x) the forward's output.");
  m.def("softmax", &hk::softmax, "x"_a, nb::kw_only(), "stream"_a = nb::none(), "Softmax over the last axis.");
  m.def("softmax_grad", &hk::softmax_grad, "y"_a, "dy"_a, nb::kw_only(), "stream"_a = nb::none(),
        "y * (dy - sum(dy * y, -1)), y the softmax output.");
  m.def("layer_norm", &hk::layer_norm, "x"_a, "weight"_a.none(), "bias"_a.none(), "eps"_a, nb::kw_only(),
        "stream"_a = nb::none(), "LayerNorm over the last axis; weight and bias both (D,) or both None.");
  m.def("layer_norm_grad", &hk::layer_norm_grad, "x"_a, "weight"_a.none(), "dy"_a, "eps"_a, nb::kw_only(),
        "stream"_a = nb::none(), "[dx] or [dx, dweight, dbias].");
  m.def("bias_add", &hk::bias_add, "x"_a, "b"_a, nb::kw_only(), "stream"_a = nb::none(),
        "x + b on every row: x (..., D), b (D,).");
  m.def("column_sum", &hk::column_sum, "dy"_a, nb::kw_only(), "stream"_a = nb::none(),
        "The sum of the rows of dy (..., D) -> (D,): the gradient of a bias.");
  m.def("bias_act", &hk::bias_act, "h"_a, "b"_a, "kind"_a, nb::kw_only(), "stream"_a = nb::none(),
        "act(h + b) per row: kind 0 exact GELU, 1 ReLU.");
  m.def("adamw", &hk::adamw, "p"_a, "g"_a, "m"_a, "v"_a, "scalars"_a, "b1"_a, "b2"_a, "eps"_a, nb::kw_only(),
        "stream"_a = nb::none(),
        "One AdamW step of one parameter -> [p, m, v]; scalars (6,): lr, wd, 1-b1^t, 1-b2^t, grad scale, keep.");
  m.def("attention", &hk::attention, "qkv"_a, "heads"_a, "scale"_a, "mask"_a.none(), nb::kw_only(),
        "stream"_a = nb::none(),
        "softmax(scale q k^T + mask) v per head, from qkv (B, N, 3 * heads * head_dim) -> (B, N, heads * head_dim).");
  m.def("isa", [] { return std::string(hk::kernels().isa); }, "The kernel build in use.");
  m.def("select_isa", [](const std::string& isa) { return hk::select_kernels(isa.c_str()); }, "isa"_a,
        "Use one kernel build ('baseline', 'avx2+fma' or 'auto'); False if unavailable here.");
  m.def("threads", [] { return hk::pool().threads(); }, "Threads a large kernel call is split over.");
}
