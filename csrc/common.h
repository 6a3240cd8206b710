// Shared pieces of the CPU kernels: float32 row views, (row, chunk) work splitting with deterministic
// per-chunk partial sums, NaN-propagating clamp / max, and the per-sample SDE coefficients.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace editrl {

// A [rows, cols] matrix with unit column stride and any row stride (in elements); null when absent.
template <class T>
struct RowView {
  T* data = nullptr;
  int64_t stride = 0;
  T* operator[](int64_t row) const { return data + row * stride; }
  explicit operator bool() const { return data != nullptr; }
};
using RowsIn = RowView<const float>;
using RowsOut = RowView<float>;

// A contiguous vector (one value per sample, or a 0-d scalar at index 0); null when absent.
template <class T>
struct VecView {
  T* data = nullptr;
  T& operator[](int64_t i) const { return data[i]; }
  explicit operator bool() const { return data != nullptr; }
};
using VecIn = VecView<const float>;
using VecOut = VecView<float>;

constexpr int64_t kChunk = 2048;            // elements per work item; a chunk's sums accumulate in float32
constexpr int64_t kSerialBelow = 1 << 15;   // tensors with fewer elements run on one thread
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kPi = 3.14159265358979323846;

// Rows of `cols` elements cut into chunks of kChunk: item i is (row(i), [begin(i), end(i))).
// Items are independent, so B = 1 with a long row still spreads over every thread.
struct ChunkGrid {
  int64_t rows, cols, per_row;
  ChunkGrid(int64_t rows, int64_t cols) : rows(rows), cols(cols), per_row((cols + kChunk - 1) / kChunk) {}
  int64_t items() const { return rows * per_row; }
  int64_t row(int64_t item) const { return item / per_row; }
  int64_t begin(int64_t item) const { return (item % per_row) * kChunk; }
  int64_t end(int64_t item) const { return std::min(begin(item) + kChunk, cols); }
};

// Threads worth using for `elements` of work, at most `requested`.
inline int threads_for(int64_t elements, int requested) {
  return elements < kSerialBelow ? 1 : std::max(requested, 1);
}

// Runs body(i) for i in [0, n) on `threads` threads. Items are handed out one at a time, so a thread that
// the OS preempts (a busy machine) does not hold the others up; results never depend on who ran an item.
template <class Body>
void parallel_for(int64_t n, int threads, const Body& body) {
  static_cast<void>(threads);  // unused in a build without OpenMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
  for (int64_t i = 0; i < n; ++i) body(i);
}

// Runs body(row) for every row of `cols` elements, rows grouped into work items of about kChunk elements.
template <class Body>
void parallel_rows(int64_t rows, int64_t cols, int requested, const Body& body) {
  const int64_t per_item = std::max<int64_t>(1, kChunk / std::max<int64_t>(cols, 1));
  parallel_for((rows + per_item - 1) / per_item, threads_for(rows * cols, requested), [&](int64_t item) {
    const int64_t end = std::min(rows, (item + 1) * per_item);
    for (int64_t row = item * per_item; row < end; ++row) body(row);
  });
}

// K partial sums per work item; row totals add the chunks in order, so results do not depend on threads.
template <int K>
struct ChunkSums {
  const ChunkGrid& grid;
  std::vector<double> sums;  // [items, K]
  explicit ChunkSums(const ChunkGrid& grid) : grid(grid), sums(grid.items() * K) {}
  double* at(int64_t item) { return &sums[item * K]; }
  double row_total(int64_t row, int k) const {
    double total = 0;
    for (int64_t c = 0; c < grid.per_row; ++c) total += sums[(row * grid.per_row + c) * K + k];
    return total;
  }
};

// torch semantics: NaN passes through clamp, max and min.
template <class T>
inline T clamp_nan(T x, T lo, T hi) { return x < lo ? lo : (x > hi ? hi : x); }
template <class T>
inline T max_nan(T a, T b) {
  return std::isnan(a) || std::isnan(b) ? std::numeric_limits<T>::quiet_NaN() : std::max(a, b);
}
template <class T>
inline T min_nan(T a, T b) { return -max_nan(-a, -b); }

// Per-sample scalars of one SDE step (editrl_engine.reference.sde_coefficients):
// mu = a_x x + a_v v, x_next = mu + s noise, logp = -c mean((x_next - mu)^2) + d; std_t is sigma_t of the KL.
struct SDECoefficients {
  double a_x, a_v, s, c, d, std_t;
};
enum class SDEKind { flow_grpo, cps };

inline SDECoefficients sde_coefficients(double t, double t_next, double t_max, double noise_level, SDEKind kind) {
  const double dt = t_next - t;
  if (kind == SDEKind::flow_grpo) {
    const double t_star = t == 1 ? t_max : t;
    const double std_t = noise_level * std::sqrt(t / (1 - t_star));
    const double s = std_t * std::sqrt(-dt);
    const double log_sqrt_2pi = 0.5 * std::log(2 * kPi);
    return {1 + std_t * std_t * dt / (2 * t), (1 + std_t * std_t * (1 - t) / (2 * t)) * dt, s,
            1 / (2 * s * s), -std::log(s) - log_sqrt_2pi, std_t};
  }
  const double s = t_next * std::sin(noise_level * kPi / 2);
  const double cos_coef = std::sqrt(std::max(t_next * t_next - s * s, 0.0));  // t_next cos(a pi / 2)
  // mu = (1 - t_next) (x - t v) + cos_coef (x + (1 - t) v)
  return {(1 - t_next) + cos_coef, -(1 - t_next) * t + cos_coef * (1 - t), s, 1, 0, kNaN};
}

}  // namespace editrl
