#pragma once
// Fixed-capacity sliding windows for the step policies. Storage is allocated once, at
// construction; push() never allocates.
//
// windowed_stats: ring buffer with a running mean and sum of squared deviations (M2), updated
//   Welford-style: O(1) per push. Adding x (window not full): n += 1, d = x - mean,
//   mean += d / n, M2 += d (x - mean). Replacing the oldest y by x (window full):
//   mean' = mean + (x - y) / n, M2 += (x - y) (x - mean' + y - mean). Unlike a running
//   sum of squares (sum x^2 - n mean^2), M2 never cancels catastrophically when the variance is
//   small relative to the mean^2. The add/remove updates still drift by a few ulps per step over
//   millions of steps, so every `capacity` replacements the mean and M2 are recomputed exactly
//   by a two-pass sum over the window: O(capacity) once per capacity steps, O(1) amortized.
//   drift_scale is the largest magnitude pushed or evicted since the last exact recompute (or
//   since clear()): the rounding the running mean and M2 carry is a few ulps of it per update,
//   also after a large value has left the window, so a loaded state is checked against it
//   (detectors.hpp, load_window), not against the values in the window now.
// window_median: the same ring plus two indexed binary heaps (a max-heap for the lower half,
//   a min-heap for the upper half); each slot knows its heap position, so the evicted value is
//   removed in O(log window) and the median read in O(1). Chosen over two std::multisets
//   (one node allocation per step) and over a sorted array (O(window) memmove per step).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace steadyloss::detail {

class windowed_stats {
 public:
  explicit windowed_stats(std::size_t capacity = 1)
      : values_(capacity), inverse_capacity_(1.0 / static_cast<double>(capacity)) {}

  void push(double x) {
    const std::size_t capacity = values_.size();
    if (count_ < capacity) {
      drift_scale_ = std::max(drift_scale_, std::fabs(x));
      values_[next_] = x;
      ++count_;
      const double delta = x - mean_;
      mean_ += delta / static_cast<double>(count_);
      m2_ += delta * (x - mean_);
    } else {
      const double oldest = values_[next_];
      drift_scale_ = std::max(drift_scale_, std::max(std::fabs(x), std::fabs(oldest)));
      values_[next_] = x;
      const double old_mean = mean_;
      mean_ += (x - oldest) * inverse_capacity_;
      m2_ += (x - oldest) * (x - mean_ + oldest - old_mean);
      if (++replacements_ >= capacity) recompute();
    }
    if (m2_ < 0) m2_ = 0;
    next_ = next_ + 1 == capacity ? 0 : next_ + 1;
  }

  /// Empties the window (keeps its storage).
  void clear() {
    count_ = next_ = replacements_ = 0;
    mean_ = m2_ = drift_scale_ = 0;
  }

  std::size_t size() const { return count_; }
  std::size_t capacity() const { return values_.size(); }
  bool full() const { return count_ == values_.size(); }
  double mean() const { return mean_; }
  /// Sample variance (n - 1 in the denominator); 0 with fewer than two values.
  double sample_variance() const { return count_ > 1 ? m2_ / static_cast<double>(count_ - 1) : 0.0; }
  double population_variance() const { return count_ > 0 ? m2_ / static_cast<double>(count_) : 0.0; }

  /// Raw state, for save/restore (slot order, not age order).
  const std::vector<double>& slots() const { return values_; }
  std::size_t next() const { return next_; }
  std::size_t replacements() const { return replacements_; }
  double m2() const { return m2_; }
  /// The largest magnitude pushed or evicted since the last exact recompute (see above).
  double drift_scale() const { return drift_scale_; }
  void set_state(const std::vector<double>& slots, std::size_t count, std::size_t next,
                 std::size_t replacements, double mean, double m2, double drift_scale) {
    std::copy(slots.begin(), slots.end(), values_.begin());
    count_ = count;
    next_ = next;
    replacements_ = replacements;
    mean_ = mean;
    m2_ = m2;
    drift_scale_ = drift_scale;
  }

 private:
  void recompute() {
    replacements_ = 0;
    double sum = 0, largest = 0;
    for (double v : values_) {
      sum += v;
      largest = std::max(largest, std::fabs(v));
    }
    const double mean = sum * inverse_capacity_;
    double m2 = 0;
    for (double v : values_) m2 += (v - mean) * (v - mean);
    mean_ = mean;
    m2_ = m2;
    drift_scale_ = largest;
  }

  std::vector<double> values_;
  double inverse_capacity_;  ///< a multiply instead of a divide on the hot path
  std::size_t count_ = 0;
  std::size_t next_ = 0;
  std::size_t replacements_ = 0;
  double mean_ = 0;
  double m2_ = 0;
  double drift_scale_ = 0;
};

class window_median {
 public:
  explicit window_median(std::size_t capacity = 1)
      : values_(capacity), low_(capacity), high_(capacity), where_(capacity) {}

  void push(double x) {
    const std::size_t capacity = values_.size();
    const auto slot = static_cast<std::uint32_t>(next_);
    if (count_ == capacity) erase(slot);
    else ++count_;
    values_[slot] = x;
    insert(slot);
    next_ = next_ + 1 == capacity ? 0 : next_ + 1;
  }

  /// Empties the window (keeps its storage).
  void clear() { count_ = next_ = low_size_ = high_size_ = 0; }

  std::size_t size() const { return count_; }
  std::size_t capacity() const { return values_.size(); }
  /// The median of the window (mean of the two middle values for an even count).
  double median() const {
    if (count_ == 0) return 0.0;
    if (low_size_ > high_size_) return values_[low_[0]];
    return 0.5 * (values_[low_[0]] + values_[high_[0]]);
  }

  const std::vector<double>& slots() const { return values_; }
  std::size_t next() const { return next_; }
  /// Rebuilds the heaps from slot contents; the median depends only on the multiset of values.
  void set_state(const std::vector<double>& slots, std::size_t count, std::size_t next) {
    std::copy(slots.begin(), slots.end(), values_.begin());
    count_ = count;
    next_ = next;
    low_size_ = high_size_ = 0;
    const std::size_t capacity = values_.size();
    const std::size_t first = count == capacity ? next : 0;
    for (std::size_t i = 0; i < count; ++i) insert(static_cast<std::uint32_t>((first + i) % capacity));
  }

 private:
  // where_[slot]: position + 1 in low_ (> 0) or -(position + 1) in high_ (< 0).
  bool above(bool low, std::uint32_t a, std::uint32_t b) const {
    return low ? values_[a] > values_[b] : values_[a] < values_[b];
  }
  std::uint32_t* heap(bool low) { return low ? low_.data() : high_.data(); }
  std::size_t& heap_size(bool low) { return low ? low_size_ : high_size_; }
  void place(bool low, std::size_t position, std::uint32_t slot) {
    heap(low)[position] = slot;
    where_[slot] = low ? static_cast<std::int64_t>(position) + 1 : -static_cast<std::int64_t>(position) - 1;
  }
  void sift_up(bool low, std::size_t position) {
    std::uint32_t* h = heap(low);
    const std::uint32_t slot = h[position];
    while (position > 0) {
      const std::size_t parent = (position - 1) / 2;
      if (!above(low, slot, h[parent])) break;
      place(low, position, h[parent]);
      position = parent;
    }
    place(low, position, slot);
  }
  void sift_down(bool low, std::size_t position) {
    std::uint32_t* h = heap(low);
    const std::size_t size = heap_size(low);
    const std::uint32_t slot = h[position];
    for (;;) {
      std::size_t child = 2 * position + 1;
      if (child >= size) break;
      if (child + 1 < size && above(low, h[child + 1], h[child])) ++child;
      if (!above(low, h[child], slot)) break;
      place(low, position, h[child]);
      position = child;
    }
    place(low, position, slot);
  }
  void heap_push(bool low, std::uint32_t slot) {
    const std::size_t position = heap_size(low)++;
    place(low, position, slot);
    sift_up(low, position);
  }
  std::uint32_t heap_pop(bool low) {
    const std::uint32_t top = heap(low)[0];
    remove_at(low, 0);
    return top;
  }
  void remove_at(bool low, std::size_t position) {
    std::size_t& size = heap_size(low);
    --size;
    if (position == size) return;
    place(low, position, heap(low)[size]);
    sift_up(low, position);
    const auto w = where_[heap(low)[position]];
    sift_down(low, static_cast<std::size_t>(low ? w - 1 : -w - 1));
  }
  void insert(std::uint32_t slot) {
    if (low_size_ == 0 || values_[slot] <= values_[low_[0]]) heap_push(true, slot);
    else heap_push(false, slot);
    rebalance();
  }
  void erase(std::uint32_t slot) {
    const auto w = where_[slot];
    if (w > 0) remove_at(true, static_cast<std::size_t>(w - 1));
    else remove_at(false, static_cast<std::size_t>(-w - 1));
    rebalance();
  }
  void rebalance() {
    if (low_size_ > high_size_ + 1) heap_push(false, heap_pop(true));
    else if (high_size_ > low_size_) heap_push(true, heap_pop(false));
  }

  std::vector<double> values_;
  std::vector<std::uint32_t> low_, high_;
  std::vector<std::int64_t> where_;
  std::size_t low_size_ = 0, high_size_ = 0, count_ = 0, next_ = 0;
};

}  // namespace steadyloss::detail
