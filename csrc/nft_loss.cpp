// DiffusionNFT's loss (docs/design.md §3) forward and backward in v, and the optimality probability r from advantages.
// With d = t beta (v - v_old) and base = x_t - x0 - t v_old, the errors are e+ = base - d and e- = base + d.
#include "kernels.h"

namespace editrl {
namespace {

enum Sum { kAbsPos, kAbsNeg, kSqPos, kSqNeg, kSqRef, kNumSums };

// Sums of |e+|, |e-|, e+^2, e-^2 and (kWithRef) (v - v_ref)^2 over [begin, end) of one row.
template <bool kWithRef>
void nft_sums(const float* v, const float* v_old, const float* x_t, const float* x0, const float* v_ref, float t,
              float t_beta, int64_t begin, int64_t end, double* sums) {
  float abs_pos = 0, abs_neg = 0, sq_pos = 0, sq_neg = 0, sq_ref = 0;
#pragma omp simd reduction(+ : abs_pos, abs_neg, sq_pos, sq_neg, sq_ref)
  for (int64_t j = begin; j < end; ++j) {
    const float base = x_t[j] - x0[j] - t * v_old[j];
    const float d = t_beta * (v[j] - v_old[j]);
    const float e_pos = base - d, e_neg = base + d;
    abs_pos += std::fabs(e_pos);
    abs_neg += std::fabs(e_neg);
    sq_pos += e_pos * e_pos;
    sq_neg += e_neg * e_neg;
    if constexpr (kWithRef) {
      const float dv = v[j] - v_ref[j];
      sq_ref += dv * dv;
    }
  }
  sums[kAbsPos] = abs_pos;
  sums[kAbsNeg] = abs_neg;
  sums[kSqPos] = sq_pos;
  sums[kSqNeg] = sq_neg;
  sums[kSqRef] = sq_ref;
}

// grad_v = k_pos e+ + k_neg e- + k_ref (v - v_ref) (kWithRef) over [begin, end) of one row.
template <bool kWithRef>
void nft_grad(const float* v, const float* v_old, const float* x_t, const float* x0, const float* v_ref, float t,
              float t_beta, float k_pos, float k_neg, float k_ref, int64_t begin, int64_t end, float* grad_v) {
#pragma omp simd
  for (int64_t j = begin; j < end; ++j) {
    const float base = x_t[j] - x0[j] - t * v_old[j];
    const float d = t_beta * (v[j] - v_old[j]);
    float g = k_pos * (base - d) + k_neg * (base + d);
    if constexpr (kWithRef) g += k_ref * (v[j] - v_ref[j]);
    grad_v[j] = g;
  }
}

}  // namespace

void nft_loss_forward(RowsIn v, RowsIn v_old, RowsIn x_t, RowsIn x0, RowsIn v_ref, VecIn t, VecIn r, VecIn valid,
                      double beta, double kl_beta, int64_t rows, int64_t cols, VecOut loss, VecOut policy,
                      VecOut kl, VecOut w_pos, VecOut w_neg, VecOut n_valid, int threads) {
  const ChunkGrid grid(rows, cols);
  ChunkSums<kNumSums> sums(grid);
  parallel_for(grid.items(), threads_for(rows * cols, threads), [&](int64_t item) {
    const int64_t b = grid.row(item);
    const auto sums_of = v_ref ? nft_sums<true> : nft_sums<false>;
    sums_of(v[b], v_old[b], x_t[b], x0[b], v_ref ? v_ref[b] : nullptr, t[b], t[b] * beta, grid.begin(item),
            grid.end(item), sums.at(item));
  });
  double total = 0, count = 0;
  for (int64_t b = 0; b < rows; ++b) {
    const double wp = max_nan(sums.row_total(b, kAbsPos) / cols, 1e-5);
    const double wn = max_nan(sums.row_total(b, kAbsNeg) / cols, 1e-5);
    const double loss_pos = sums.row_total(b, kSqPos) / cols / wp;
    const double loss_neg = sums.row_total(b, kSqNeg) / cols / wn;
    const double pol = (r[b] * loss_pos + (1 - r[b]) * loss_neg) / beta;
    double per_sample = pol;
    if (v_ref) {
      const double kl_b = sums.row_total(b, kSqRef) / cols;
      kl[b] = kl_b;
      per_sample += kl_beta * kl_b;
    }
    policy[b] = pol;
    w_pos[b] = wp;
    w_neg[b] = wn;
    total += valid[b] * per_sample;
    count += valid[b];
  }
  loss[0] = total / std::max(count, 1.0);
  n_valid[0] = count;
}

void nft_loss_backward(VecIn grad_loss, VecIn grad_policy, VecIn grad_kl, RowsIn v, RowsIn v_old, RowsIn x_t,
                       RowsIn x0, RowsIn v_ref, VecIn t, VecIn r, VecIn valid, VecIn w_pos, VecIn w_neg,
                       VecIn n_valid, double beta, double kl_beta, int64_t rows, int64_t cols, RowsOut grad_v,
                       int threads) {
  const double loss_scale = grad_loss[0] / std::max<double>(n_valid[0], 1.0);
  const bool with_ref = static_cast<bool>(v_ref);
  const ChunkGrid grid(rows, cols);
  parallel_for(grid.items(), threads_for(rows * cols, threads), [&](int64_t item) {
    const int64_t b = grid.row(item);
    const double g_policy = loss_scale * valid[b] + grad_policy[b];
    const double g_kl = loss_scale * kl_beta * valid[b] + (grad_kl ? grad_kl[b] : 0.0);
    const double scale = g_policy * 2 * t[b] / cols;  // beta cancels: d e± / dv = ∓ t beta, policy / beta
    const auto grad_of = with_ref ? nft_grad<true> : nft_grad<false>;
    grad_of(v[b], v_old[b], x_t[b], x0[b], with_ref ? v_ref[b] : nullptr, t[b], t[b] * beta,
            -scale * r[b] / w_pos[b], scale * (1 - r[b]) / w_neg[b], g_kl * 2 / cols, grid.begin(item),
            grid.end(item), grad_v[b]);
  });
}

void nft_optimality(VecIn advantages, int64_t n, double clip, VecOut r) {
  for (int64_t i = 0; i < n; ++i) {
    r[i] = clamp_nan(0.5 + 0.5 * clamp_nan<double>(advantages[i], -clip, clip) / clip, 0.0, 1.0);
  }
}

}  // namespace editrl
