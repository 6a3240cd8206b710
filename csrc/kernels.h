// The CPU kernels that bindings.cpp exposes. Latents are [rows, cols] row views, per-sample vectors [rows];
// outputs are written in full. `threads` caps the OpenMP team (the launcher passes torch.get_num_threads()).
#pragma once

#include <optional>

#include "common.h"

namespace editrl {

// group_advantages.cpp: rewards [n], group_index [n] -> advantages [n], valid [n], mean [num_groups], std [num_groups]
void group_advantages(VecIn rewards, VecView<const int64_t> group_index, int64_t n, int64_t num_groups,
                      bool std_global, double eps, double clip, std::optional<double> filter_std,
                      std::optional<double> filter_mean, VecOut advantages, VecView<bool> valid, VecOut mean,
                      VecOut std);

// sde.cpp
void sde_step(RowsIn x, RowsIn v, RowsIn noise, VecIn t, VecIn t_next, VecIn t_max, double noise_level,
              SDEKind kind, int64_t rows, int64_t cols, RowsOut x_next, VecOut logp, int threads);
void sde_logprob_forward(RowsIn x_next, RowsIn x, RowsIn v, RowsIn v_ref, VecIn t, VecIn t_next, VecIn t_max,
                         double noise_level, SDEKind kind, int64_t rows, int64_t cols, VecOut logp, VecOut kl,
                         int threads);
void sde_logprob_backward(VecIn grad_logp, VecIn grad_kl, RowsIn x_next, RowsIn x, RowsIn v, RowsIn v_ref, VecIn t,
                          VecIn t_next, VecIn t_max, double noise_level, SDEKind kind, int64_t rows, int64_t cols,
                          RowsOut grad_v, int threads);

// nft_loss.cpp
void nft_loss_forward(RowsIn v, RowsIn v_old, RowsIn x_t, RowsIn x0, RowsIn v_ref, VecIn t, VecIn r, VecIn valid,
                      double beta, double kl_beta, int64_t rows, int64_t cols, VecOut loss, VecOut policy,
                      VecOut kl, VecOut w_pos, VecOut w_neg, VecOut n_valid, int threads);
void nft_loss_backward(VecIn grad_loss, VecIn grad_policy, VecIn grad_kl, RowsIn v, RowsIn v_old, RowsIn x_t,
                       RowsIn x0, RowsIn v_ref, VecIn t, VecIn r, VecIn valid, VecIn w_pos, VecIn w_neg,
                       VecIn n_valid, double beta, double kl_beta, int64_t rows, int64_t cols, RowsOut grad_v,
                       int threads);
void nft_optimality(VecIn advantages, int64_t n, double clip, VecOut r);

// grpo_loss.cpp: per-sample vectors [n]; stats [5] = clipfrac, approx_kl, ratio mean / min / max
void grpo_loss_forward(VecIn logp, VecIn logp_old, VecIn adv, VecIn valid, VecIn kl, double clip_low,
                       double clip_high, double kl_beta, int64_t n, VecOut loss, VecOut stats, VecOut n_valid);
void grpo_loss_backward(VecIn grad_loss, VecIn logp, VecIn logp_old, VecIn adv, VecIn valid, VecIn n_valid,
                        double clip_low, double clip_high, double kl_beta, int64_t n, VecOut grad_logp,
                        VecOut grad_kl);

// cfg.cpp: token rows [rows, channels]; the scale of row i is scale[i / rows_per_batch]
void cfg_combine_forward(RowsIn v_cond, RowsIn v_uncond, VecIn scale, int64_t rows_per_batch, bool rescale,
                         int64_t rows, int64_t channels, RowsOut out, int threads);
void cfg_combine_backward(RowsIn grad_out, RowsIn v_cond, RowsIn v_uncond, VecIn scale, int64_t rows_per_batch,
                          bool rescale, int64_t rows, int64_t channels, RowsOut grad_cond, RowsOut grad_uncond,
                          int threads);

}  // namespace editrl
