// Multi-head self-attention straight from the qkv projection, forward and backward, per (image, head).
//
// MLX's CPU backend runs attention as separate ops: head transposes that copy, one small BLAS call per
// (image, head) for q k^T and for p v (and five in the backward), each a 60-200 token GEMM that MKL runs at
// ~5-20 GFLOP/s, and the softmax between them. Here one (image, head) is one job: q, k, v are read in place
// from qkv (B, N, 3, H, hd), the two (forward) or five (backward) products run in a register-blocked
// micro-kernel on small packed panels that stay in cache, and the softmax sits between them. The forward
// keeps the row log-sum-exp so the backward rebuilds the probabilities with one product instead of storing
// them (as FlashAttention does). Jobs are independent, so the caller spreads them over the cores.
//
// Included by the kernels_<isa>.cpp builds after math_kernels.h (same namespace, exp_split).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "attention_shape.h"

namespace hjepa_kernels::HJEPA_KERNEL_NS {

#if defined(__AVX512F__)
typedef float vecf __attribute__((vector_size(64)));
constexpr size_t kTileRows = 12;           // 12 x 2 accumulators + 2 loads + 1 broadcast of 32 registers
#elif defined(__AVX__)
typedef float vecf __attribute__((vector_size(32)));
constexpr size_t kTileRows = 6;            // 6 x 2 accumulators + 2 loads + 1 broadcast of 16 registers
#else
typedef float vecf __attribute__((vector_size(16)));
constexpr size_t kTileRows = 6;
#endif
constexpr size_t kLanes = sizeof(vecf) / sizeof(float);
constexpr size_t kTileCols = 2 * kLanes;   // columns of one micro-kernel tile: two vectors

static inline vecf vload(const float* p) {
  vecf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline void vstore(float* p, vecf v) { std::memcpy(p, &v, sizeof v); }
static inline vecf vsplat(const float* p) {   // *p in every lane
#if defined(__AVX512F__)
  return _mm512_set1_ps(*p);
#elif defined(__AVX__)
  return _mm256_broadcast_ss(p);
#else
  vecf v;
  for (size_t i = 0; i < kLanes; ++i) v[i] = *p;
  return v;
#endif
}
static inline vecf vfma(vecf a, vecf b, vecf c) {
#if defined(__AVX512F__)
  return _mm512_fmadd_ps(a, b, c);
#elif defined(__FMA__) && defined(__AVX__)
  return _mm256_fmadd_ps(a, b, c);
#else
  return a * b + c;
#endif
}

static inline size_t padded(size_t n) { return (n + kTileCols - 1) / kTileCols * kTileCols; }

// C[0:R, 0:kTileCols] = A[0:R, 0:K] B[0:K, 0:kTileCols]; A's element (i, k) at A[i * ars + k * acs]
// (so a transposed operand costs nothing), B row-major with row stride ldb, C row stride ldc.
template <int R>
static inline void micro_tile(size_t K, const float* __restrict A, size_t ars, size_t acs,
                              const float* __restrict B, size_t ldb, float* __restrict C, size_t ldc) {
  vecf c0[R], c1[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) c0[r] = c1[r] = vecf{};
  for (size_t k = 0; k < K; ++k) {
    const vecf b0 = vload(B + k * ldb), b1 = vload(B + k * ldb + kLanes);
    const float* a = A + k * acs;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const vecf av = vsplat(a + r * ars);
      c0[r] = vfma(av, b0, c0[r]);
      c1[r] = vfma(av, b1, c1[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    vstore(C + r * ldc, c0[r]);
    vstore(C + r * ldc + kLanes, c1[r]);
  }
}

// The micro-kernel for the last `rows` (< R) rows of a column of tiles.
template <int R>
static inline void tail_tile(size_t rows, size_t K, const float* A, size_t ars, size_t acs, const float* B, size_t ldb,
                             float* C, size_t ldc) {
  if constexpr (R > 1) {
    if (rows == R - 1) return micro_tile<R - 1>(K, A, ars, acs, B, ldb, C, ldc);
    tail_tile<R - 1>(rows, K, A, ars, acs, B, ldb, C, ldc);
  }
}

// C[0:M, 0:Np] = A[0:M, 0:K] B[0:K, 0:Np] with B packed row-major (row stride Np, a multiple of kTileCols).
static void small_gemm(size_t M, size_t Np, size_t K, const float* A, size_t ars, size_t acs, const float* B,
                       float* C, size_t ldc) {
  constexpr int R = static_cast<int>(kTileRows);
  for (size_t j = 0; j < Np; j += kTileCols) {
    size_t i = 0;
    for (; i + kTileRows <= M; i += kTileRows) micro_tile<R>(K, A + i * ars, ars, acs, B + j, Np, C + i * ldc + j, ldc);
    if (i < M) tail_tile<R>(M - i, K, A + i * ars, ars, acs, B + j, Np, C + i * ldc + j, ldc);
  }
}

// dst[r * Np + c] = src[r * rs + c * cs] for r < rows, c < cols; zeros in the padding columns.
static void pack(const float* src, size_t rows, size_t cols, size_t rs, size_t cs, float* dst, size_t Np) {
  for (size_t r = 0; r < rows; ++r) {
    float* d = dst + r * Np;
    const float* s = src + r * rs;
    if (cs == 1) {
      std::memcpy(d, s, cols * sizeof(float));
    } else {
      for (size_t c = 0; c < cols; ++c) d[c] = s[c * cs];
    }
    for (size_t c = cols; c < Np; ++c) d[c] = 0.0f;
  }
}

// Per-job scratch, sized once per part of a call.
struct AttentionScratch {
  std::vector<float> a, b, c, d, e;
  AttentionScratch(size_t N, size_t hd) {
    const size_t Np = padded(N), Hp = padded(hd);
    const size_t panel = std::max(N * Hp, hd * Np);
    a.resize(panel);
    b.resize(panel);
    c.resize(N * Np);
    d.resize(N * Np);
    e.resize(N * Hp);
  }
};

// Scores s = scale * q k^T (+ mask) of one (image, head) into S (N x Np); q, k point at the head's first
// element in qkv, `row` the token stride. kt: scratch for the packed k^T (hd x Np).
static void attention_scores(const AttentionShape& s, const float* q, const float* k, const float* mask,
                             float* kt, float* S) {
  const size_t N = s.tokens, hd = s.head_dim, Np = padded(N), row = 3 * s.heads * hd;
  pack(k, hd, N, 1, row, kt, Np);   // kt[c][j] = k[j][c]
  small_gemm(N, Np, hd, q, row, 1, kt, S, Np);
  const float scale = s.scale;
  for (size_t i = 0; i < N; ++i) {
    float* __restrict si = S + i * Np;
    if (mask) {
      const float* __restrict mi = mask + i * N;
      for (size_t j = 0; j < N; ++j) si[j] = HJEPA_FMA(si[j], scale, mi[j]);
    } else {
      for (size_t j = 0; j < N; ++j) si[j] *= scale;
    }
  }
}

// One (image, head) job: where its q, k, v start in qkv (token stride 3 * H * hd) and its offset in
// (B, N, H * hd) arrays (token stride H * hd).
struct HeadJob {
  const float *q, *k, *v;
  size_t offset;
};

static inline HeadJob head_job(const AttentionShape& s, const float* qkv, size_t job) {
  const size_t N = s.tokens, hd = s.head_dim, H = s.heads, D = H * hd;
  const size_t b = job / H, h = job % H;
  const float* base = qkv + b * N * 3 * D + h * hd;
  return {base, base + D, base + 2 * D, b * N * D + h * hd};
}

// out (B, N, H*hd) = softmax(scale q k^T + mask) v per (image, head); lse (B, H, N) = the rows' log-sum-exp.
// Jobs [begin, end) of the B*H (image, head) pairs.
static void attention_forward(const AttentionShape& s, const float* qkv, const float* mask, float* out,
                              float* lse, size_t begin, size_t end) {
  const size_t N = s.tokens, hd = s.head_dim, H = s.heads, D = H * hd, row = 3 * D;
  const size_t Np = padded(N), Hp = padded(hd);
  AttentionScratch w(N, hd);
  for (size_t job = begin; job < end; ++job) {
    const HeadJob j = head_job(s, qkv, job);
    float* P = w.c.data();
    attention_scores(s, j.q, j.k, mask, w.a.data(), P);
    float* lse_job = lse + job * N;
    for (size_t i = 0; i < N; ++i) {
      float* __restrict pi = P + i * Np;
      const float m = row_max(pi, N);
      for (size_t j = 0; j < N; ++j) pi[j] = exp_split(pi[j] - m, 0.0f);
      const float sum = row_sum(pi, N);
      const float inv = 1.0f / sum;
      for (size_t j = 0; j < N; ++j) pi[j] *= inv;
      lse_job[i] = m + std::log(sum);
    }
    pack(j.v, N, hd, row, 1, w.b.data(), Hp);
    float* o = w.e.data();
    small_gemm(N, Hp, N, P, Np, 1, w.b.data(), o, Hp);
    for (size_t i = 0; i < N; ++i) std::memcpy(out + j.offset + i * D, o + i * Hp, hd * sizeof(float));
  }
}

// dqkv (B, N, 3, H, hd) from dout (B, N, H*hd), with the forward's out and lse: p = exp(scores - lse),
// dv = p^T dout, dp = dout v^T, ds = scale * p * (dp - rowsum(dout * out)), dq = ds k, dk = ds^T q.
static void attention_backward(const AttentionShape& s, const float* qkv, const float* mask, const float* out,
                               const float* lse, const float* dout, float* dqkv, size_t begin, size_t end) {
  const size_t N = s.tokens, hd = s.head_dim, H = s.heads, D = H * hd, row = 3 * D;
  const size_t Np = padded(N), Hp = padded(hd);
  AttentionScratch w(N, hd);
  for (size_t job = begin; job < end; ++job) {
    const HeadJob j = head_job(s, qkv, job);
    const float *q = j.q, *k = j.k, *v = j.v;
    const float* o = out + j.offset;
    const float* go = dout + j.offset;
    float* dbase = dqkv + (j.q - qkv);      // dqkv has qkv's layout
    float *P = w.c.data(), *dS = w.d.data(), *result = w.e.data();
    const auto store = [&](float* dst) {   // result (N x Hp) -> the head's rows of dq, dk or dv
      for (size_t i = 0; i < N; ++i) std::memcpy(dst + i * row, result + i * Hp, hd * sizeof(float));
    };

    attention_scores(s, q, k, mask, w.a.data(), P);
    const float* lse_job = lse + job * N;
    for (size_t i = 0; i < N; ++i) {
      float* __restrict pi = P + i * Np;
      const float l = lse_job[i];
      for (size_t j = 0; j < N; ++j) pi[j] = exp_split(pi[j] - l, 0.0f);
    }
    // dv = p^T dout: A = p^T, read in place from P.
    pack(go, N, hd, D, 1, w.b.data(), Hp);
    small_gemm(N, Hp, N, P, 1, Np, w.b.data(), result, Hp);
    store(dbase + 2 * D);
    // dp = dout v^T, then ds in place.
    pack(v, hd, N, 1, row, w.a.data(), Np);   // v^T
    small_gemm(N, Np, hd, go, D, 1, w.a.data(), dS, Np);
    const float scale = s.scale;
    for (size_t i = 0; i < N; ++i) {
      const float delta = row_dot(go + i * D, o + i * D, hd);
      const float* __restrict pi = P + i * Np;
      float* __restrict di = dS + i * Np;
      for (size_t j = 0; j < N; ++j) di[j] = scale * pi[j] * (di[j] - delta);
    }
    // dq = ds k
    pack(k, N, hd, row, 1, w.b.data(), Hp);
    small_gemm(N, Hp, N, dS, Np, 1, w.b.data(), result, Hp);
    store(dbase);
    // dk = ds^T q
    pack(q, N, hd, row, 1, w.b.data(), Hp);
    small_gemm(N, Hp, N, dS, 1, Np, w.b.data(), result, Hp);
    store(dbase + D);
  }
}

}  // namespace hjepa_kernels::HJEPA_KERNEL_NS
