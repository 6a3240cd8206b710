// Classifier-free guidance on token rows [rows, channels] (docs/design.md §3): c = u + g (k - u) with k = v_cond,
// u = v_uncond, g = scale of the row's sample; rescale="norm" gives out = c |k| / max(|c|, 1e-12) per row.
#include "kernels.h"

namespace editrl {
namespace {

constexpr double kNormEps = 1e-12;

// |k|^2, |c|^2 and go . c over one row (go may be null).
struct RowNorms {
  double sq_cond = 0, sq_combined = 0, grad_dot_combined = 0;
};

RowNorms row_norms(const float* k, const float* u, const float* go, float g, int64_t channels) {
  float sq_k = 0, sq_c = 0, dot = 0;
#pragma omp simd reduction(+ : sq_k, sq_c, dot)
  for (int64_t j = 0; j < channels; ++j) {
    const float c = u[j] + g * (k[j] - u[j]);
    sq_k += k[j] * k[j];
    sq_c += c * c;
    if (go) dot += go[j] * c;
  }
  return {sq_k, sq_c, dot};
}

}  // namespace

void cfg_combine_forward(RowsIn v_cond, RowsIn v_uncond, VecIn scale, int64_t rows_per_batch, bool rescale,
                         int64_t rows, int64_t channels, RowsOut out, int threads) {
  parallel_rows(rows, channels, threads, [&](int64_t i) {
    const float g = scale[i / rows_per_batch];
    const float *k = v_cond[i], *u = v_uncond[i];
    float* o = out[i];
    float factor = 1;
    if (rescale) {
      const RowNorms norms = row_norms(k, u, nullptr, g, channels);
      factor = std::sqrt(norms.sq_cond) / max_nan(std::sqrt(norms.sq_combined), kNormEps);
    }
#pragma omp simd
    for (int64_t j = 0; j < channels; ++j) {
      const float c = u[j] + g * (k[j] - u[j]);
      o[j] = rescale ? c * factor : c;
    }
  });
}

void cfg_combine_backward(RowsIn grad_out, RowsIn v_cond, RowsIn v_uncond, VecIn scale, int64_t rows_per_batch,
                          bool rescale, int64_t rows, int64_t channels, RowsOut grad_cond, RowsOut grad_uncond,
                          int threads) {
  parallel_rows(rows, channels, threads, [&](int64_t i) {
    const float g = scale[i / rows_per_batch];
    const float *k = v_cond[i], *u = v_uncond[i], *go = grad_out[i];
    float *gk = grad_cond[i], *gu = grad_uncond[i];
    if (!rescale) {
#pragma omp simd
      for (int64_t j = 0; j < channels; ++j) {
        gk[j] = g * go[j];
        gu[j] = (1 - g) * go[j];
      }
      return;
    }
    // gc = (n_k / n_c) (go - c (go . c) / n_c^2), grad_k = g gc + (go . c) / n_c k / n_k, grad_u = (1 - g) gc
    const RowNorms norms = row_norms(k, u, go, g, channels);
    const double n_k = std::sqrt(norms.sq_cond), n_c_raw = std::sqrt(norms.sq_combined);
    const double n_c = max_nan(n_c_raw, kNormEps), dot = norms.grad_dot_combined;
    const float ratio = n_k / n_c;
    const float projection = n_c_raw >= kNormEps ? dot / (n_c * n_c) : 0.0;  // a clamped norm passes no gradient
    const float along_cond = n_k == 0 ? 0.0 : dot / n_c / n_k;                 // torch's norm gradient is 0 at 0
#pragma omp simd
    for (int64_t j = 0; j < channels; ++j) {
      const float c = u[j] + g * (k[j] - u[j]);
      const float gc = ratio * (go[j] - c * projection);
      gk[j] = g * gc + along_cond * k[j];
      gu[j] = (1 - g) * gc;
    }
  });
}

}  // namespace editrl
