// SDE step and log-probability (docs/design.md §3): x_next = a_x x + a_v v + s noise, logp = -c mean((x_next - mu)^2) + d,
// Flow-GRPO's KL a_v^2 mean((v - v_ref)^2) / (2 std_t^2), and their gradient in v. Latents [rows, cols].
#include "kernels.h"

namespace editrl {
namespace {

std::vector<SDECoefficients> row_coefficients(VecIn t, VecIn t_next, VecIn t_max, double noise_level, SDEKind kind,
                                              int64_t rows) {
  std::vector<SDECoefficients> coef(rows);
  for (int64_t b = 0; b < rows; ++b) coef[b] = sde_coefficients(t[b], t_next[b], t_max[b], noise_level, kind);
  return coef;
}

// sums[0] = sum (x_next - mu)^2, sums[1] = sum (v - v_ref)^2 (kWithRef) over [begin, end) of one row.
template <bool kWithRef>
void logprob_sums(const float* x_next, const float* x, const float* v, const float* v_ref, float a_x, float a_v,
                  int64_t begin, int64_t end, double* sums) {
  float sq = 0, kl = 0;
#pragma omp simd reduction(+ : sq, kl)
  for (int64_t j = begin; j < end; ++j) {
    const float diff = x_next[j] - (a_x * x[j] + a_v * v[j]);
    sq += diff * diff;
    if constexpr (kWithRef) {
      const float dv = v[j] - v_ref[j];
      kl += dv * dv;
    }
  }
  sums[0] = sq;
  sums[1] = kl;
}

// grad_v = k_logp (x_next - mu) + k_kl (v - v_ref) (kWithRef) over [begin, end) of one row.
template <bool kWithRef>
void logprob_grad(const float* x_next, const float* x, const float* v, const float* v_ref, float a_x, float a_v,
                  float k_logp, float k_kl, int64_t begin, int64_t end, float* grad_v) {
#pragma omp simd
  for (int64_t j = begin; j < end; ++j) {
    float g = k_logp * (x_next[j] - (a_x * x[j] + a_v * v[j]));
    if constexpr (kWithRef) g += k_kl * (v[j] - v_ref[j]);
    grad_v[j] = g;
  }
}

}  // namespace

void sde_step(RowsIn x, RowsIn v, RowsIn noise, VecIn t, VecIn t_next, VecIn t_max, double noise_level,
              SDEKind kind, int64_t rows, int64_t cols, RowsOut x_next, VecOut logp, int threads) {
  const auto coef = row_coefficients(t, t_next, t_max, noise_level, kind, rows);
  const ChunkGrid grid(rows, cols);
  ChunkSums<1> sq(grid);
  parallel_for(grid.items(), threads_for(rows * cols, threads), [&](int64_t item) {
    const int64_t b = grid.row(item);
    const float a_x = coef[b].a_x, a_v = coef[b].a_v, s = coef[b].s;
    const float *xb = x[b], *vb = v[b], *nb = noise[b];
    float* out = x_next[b];
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = grid.begin(item); j < grid.end(item); ++j) {
      const float mu = a_x * xb[j] + a_v * vb[j];
      const float next = mu + s * nb[j];
      const float diff = next - mu;  // from the float32 sample, as logp of the stored x_next would see it
      out[j] = next;
      sum += diff * diff;
    }
    sq.at(item)[0] = sum;
  });
  for (int64_t b = 0; b < rows; ++b) logp[b] = -coef[b].c * sq.row_total(b, 0) / cols + coef[b].d;
}

void sde_logprob_forward(RowsIn x_next, RowsIn x, RowsIn v, RowsIn v_ref, VecIn t, VecIn t_next, VecIn t_max,
                         double noise_level, SDEKind kind, int64_t rows, int64_t cols, VecOut logp, VecOut kl,
                         int threads) {
  const auto coef = row_coefficients(t, t_next, t_max, noise_level, kind, rows);
  const ChunkGrid grid(rows, cols);
  ChunkSums<2> sums(grid);
  parallel_for(grid.items(), threads_for(rows * cols, threads), [&](int64_t item) {
    const int64_t b = grid.row(item);
    const auto sums_of = v_ref ? logprob_sums<true> : logprob_sums<false>;
    sums_of(x_next[b], x[b], v[b], v_ref ? v_ref[b] : nullptr, coef[b].a_x, coef[b].a_v, grid.begin(item),
            grid.end(item), sums.at(item));
  });
  for (int64_t b = 0; b < rows; ++b) {
    const SDECoefficients& k = coef[b];
    logp[b] = -k.c * sums.row_total(b, 0) / cols + k.d;
    if (v_ref) kl[b] = k.a_v * k.a_v * (sums.row_total(b, 1) / cols) / (2 * k.std_t * k.std_t);
  }
}

void sde_logprob_backward(VecIn grad_logp, VecIn grad_kl, RowsIn x_next, RowsIn x, RowsIn v, RowsIn v_ref, VecIn t,
                          VecIn t_next, VecIn t_max, double noise_level, SDEKind kind, int64_t rows, int64_t cols,
                          RowsOut grad_v, int threads) {
  const auto coef = row_coefficients(t, t_next, t_max, noise_level, kind, rows);
  const bool with_ref = v_ref && grad_kl;
  const ChunkGrid grid(rows, cols);
  parallel_for(grid.items(), threads_for(rows * cols, threads), [&](int64_t item) {
    const int64_t b = grid.row(item);
    const SDECoefficients& k = coef[b];
    const float k_logp = grad_logp[b] * 2 * k.c * k.a_v / cols;
    const float k_kl = with_ref ? grad_kl[b] * k.a_v * k.a_v / (cols * k.std_t * k.std_t) : 0.0;
    const auto grad_of = with_ref ? logprob_grad<true> : logprob_grad<false>;
    grad_of(x_next[b], x[b], v[b], with_ref ? v_ref[b] : nullptr, k.a_x, k.a_v, k_logp, k_kl, grid.begin(item),
            grid.end(item), grad_v[b]);
  });
}

}  // namespace editrl
