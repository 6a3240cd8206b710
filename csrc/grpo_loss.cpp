// Flow-GRPO's PPO-clipped loss over samples (docs/design.md §3): loss, its statistics and the gradient in logp and kl.
// Per-sample vectors [n] are short, so this runs on one thread in double precision.
#include "kernels.h"

namespace editrl {

void grpo_loss_forward(VecIn logp, VecIn logp_old, VecIn adv, VecIn valid, VecIn kl, double clip_low,
                       double clip_high, double kl_beta, int64_t n, VecOut loss, VecOut stats, VecOut n_valid) {
  const double lo = 1 - clip_low, hi = 1 + clip_high;
  double total = 0, count = 0, clipped = 0, sq_delta = 0, ratio_sum = 0;
  double ratio_min = INFINITY, ratio_max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    const double delta = static_cast<double>(logp[i]) - logp_old[i];
    const double ratio = std::exp(delta);
    double per_sample = max_nan(-adv[i] * ratio, -adv[i] * clamp_nan(ratio, lo, hi));
    if (kl) per_sample += kl_beta * kl[i];
    total += valid[i] * per_sample;
    count += valid[i];
    if (valid[i] == 0) continue;
    clipped += ratio < lo || ratio > hi;
    sq_delta += delta * delta;
    ratio_sum += ratio;
    ratio_min = min_nan(ratio_min, ratio);
    ratio_max = max_nan(ratio_max, ratio);
  }
  loss[0] = total / std::max(count, 1.0);
  n_valid[0] = count;
  const bool any = count > 0;
  stats[0] = clipped / count;  // NaN when nothing is valid
  stats[1] = 0.5 * sq_delta / count;
  stats[2] = ratio_sum / count;
  stats[3] = any ? ratio_min : kNaN;
  stats[4] = any ? ratio_max : kNaN;
}

void grpo_loss_backward(VecIn grad_loss, VecIn logp, VecIn logp_old, VecIn adv, VecIn valid, VecIn n_valid,
                        double clip_low, double clip_high, double kl_beta, int64_t n, VecOut grad_logp,
                        VecOut grad_kl) {
  const double lo = 1 - clip_low, hi = 1 + clip_high;
  const double loss_scale = grad_loss[0] / std::max<double>(n_valid[0], 1.0);
  for (int64_t i = 0; i < n; ++i) {
    const double ratio = std::exp(static_cast<double>(logp[i]) - logp_old[i]);
    const double unclipped = -adv[i] * ratio, clipped = -adv[i] * clamp_nan(ratio, lo, hi);
    // torch.maximum's gradient: all to the larger input, half to each on a tie, all to both when NaN
    const double to_unclipped = unclipped < clipped ? 0 : (unclipped == clipped ? 0.5 : 1);
    const double to_clipped = unclipped > clipped ? 0 : (unclipped == clipped ? 0.5 : 1);
    const double in_range = lo <= ratio && ratio <= hi;  // clamp passes the gradient inside [lo, hi]
    grad_logp[i] = loss_scale * valid[i] * -adv[i] * ratio * (to_unclipped + to_clipped * in_range);
    if (grad_kl) grad_kl[i] = loss_scale * kl_beta * valid[i];
  }
}

}  // namespace editrl
