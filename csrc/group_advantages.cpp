// Group-normalised advantages with low-variance filtering (docs/design.md §3). Groups are ragged and unordered;
// statistics are two-pass (mean, then squared deviations) over finite rewards, in double precision.
#include "kernels.h"

namespace editrl {

void group_advantages(VecIn rewards, VecView<const int64_t> group_index, int64_t n, int64_t num_groups,
                      bool std_global, double eps, double clip, std::optional<double> filter_std,
                      std::optional<double> filter_mean, VecOut advantages, VecView<bool> valid, VecOut mean,
                      VecOut std) {
  std::vector<double> count(num_groups), sum(num_groups), sq_dev(num_groups);  // [G]
  double global_count = 0, global_sum = 0, global_sq_dev = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(rewards[i])) continue;
    count[group_index[i]] += 1;
    sum[group_index[i]] += rewards[i];
    global_count += 1;
    global_sum += rewards[i];
  }
  std::vector<double> group_mean(num_groups);
  for (int64_t g = 0; g < num_groups; ++g) group_mean[g] = sum[g] / count[g];  // NaN for an empty group
  const double global_mean = global_sum / global_count;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(rewards[i])) continue;
    const double dev = rewards[i] - group_mean[group_index[i]], global_dev = rewards[i] - global_mean;
    sq_dev[group_index[i]] += dev * dev;
    global_sq_dev += global_dev * global_dev;
  }
  std::vector<double> group_std(num_groups);
  for (int64_t g = 0; g < num_groups; ++g) {
    group_std[g] = std::sqrt(sq_dev[g] / count[g]);
    mean[g] = group_mean[g];
    std[g] = group_std[g];
  }
  const double global_std = std::sqrt(global_sq_dev / global_count);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t g = group_index[i];
    const bool ok = std::isfinite(rewards[i]) && (!filter_std || group_std[g] > *filter_std) &&
                    (!filter_mean || group_mean[g] < *filter_mean);
    const double norm_std = std_global ? global_std : group_std[g];
    valid[i] = ok;
    advantages[i] = ok ? clamp_nan((rewards[i] - group_mean[g]) / (norm_std + eps), -clip, clip) : 0.0;
  }
}

}  // namespace editrl
