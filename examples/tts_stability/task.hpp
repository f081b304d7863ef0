#pragma once
// The TTS-like task of the study: a fixed random "teacher" maps per-frame features to 80-bin mel
// frames; the student (a 1-hidden-layer tanh MLP, forward and backward written by hand with Eigen)
// learns it from noisy targets and predicts a stop-token logit per frame.
//
//   features   per frame: a phoneme embedding (segments of 4..14 frames, 16 dims, N(0, 1)), plus
//              two position features, t / (len - 1) and exp(-(len - 1 - t) / 2), so the end of a
//              sequence can be seen
//   mel        teacher(features) + heavy-tailed noise: Student t with 2 degrees of freedom (infinite
//              variance) times noise_scale; the held-out test set has clean targets
//   stop       1 at the last valid frame, 0 elsewhere: one positive per ~100 frames
//   lengths    uniform in [min_length, max_length]; batches are padded to their longest sequence
//   corruption a corrupted batch's mel targets are replaced by a misaligned (circularly shifted)
//              copy with gain x4: a bad transcript/audio pairing, the source of real loss spikes;
//              a non-finite batch's targets hold 3 NaN and one +Inf per sequence: a broken audio
//              file. Which batches, and how often, is the scenario's (scenarios.hpp)

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <span>
#include <vector>

#include "scenarios.hpp"

namespace tts {

inline constexpr int mel_bins = 80;
inline constexpr int embedding_dims = 16;
inline constexpr int feature_dims = embedding_dims + 2;

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vector = Eigen::VectorXf;
using RowVector = Eigen::RowVectorXf;

struct task_settings {
  int train_sequences = 160;
  int validation_sequences = 8;
  int test_sequences = 8;
  int min_length = 60, max_length = 140;
  int teacher_hidden = 24;
  double noise_scale = 0.2;
};

struct sequence {
  Matrix features;  // [length, feature_dims]
  Matrix mel;       // [length, mel_bins] (noisy, or clean for the test set)
  int length() const { return static_cast<int>(features.rows()); }
};

/// A padded batch in the row-major [batch, max_frames, ...] layout steadyloss's lengths() expects.
struct batch {
  std::vector<int> lengths;
  int max_frames = 0;
  Matrix features;   // [batch * max_frames, feature_dims], zeros in padding
  Matrix mel;        // [batch * max_frames, mel_bins]
  Vector stop;       // [batch * max_frames]
  steadyloss::study::batch_kind kind = steadyloss::study::batch_kind::clean;
};

/// Standard Student t with 2 degrees of freedom from one uniform: (2u - 1) / sqrt(2 u (1 - u)).
inline double student_t2(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> uniform(1e-12, 1.0 - 1e-12);
  const double u = uniform(rng);
  return (2 * u - 1) / std::sqrt(2 * u * (1 - u));
}

struct teacher {
  Matrix w1;
  RowVector b1;
  Matrix w2;
  RowVector b2;
  teacher(int hidden, std::mt19937_64& rng) : w1(feature_dims, hidden), b1(hidden), w2(hidden, mel_bins), b2(mel_bins) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const float s1 = 1.5f / std::sqrt(float(feature_dims)), s2 = 1.0f / std::sqrt(float(hidden));
    for (auto& x : w1.reshaped()) x = s1 * normal(rng);
    for (auto& x : b1) x = 0.3f * normal(rng);
    for (auto& x : w2.reshaped()) x = s2 * normal(rng);
    for (auto& x : b2) x = 0.5f * normal(rng);
  }
  Matrix operator()(const Matrix& x) const {
    Matrix h = ((x * w1).rowwise() + b1).array().tanh().matrix();
    return (h * w2).rowwise() + b2;
  }
};

struct dataset {
  std::vector<sequence> train, validation, test;
};

inline sequence make_sequence(const task_settings& s, const teacher& t, bool noisy, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> length_of(s.min_length, s.max_length), segment_of(4, 14);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int length = length_of(rng);
  sequence q;
  q.features.resize(length, feature_dims);
  for (int t0 = 0; t0 < length;) {
    const int end = std::min(length, t0 + segment_of(rng));
    Eigen::Matrix<float, 1, embedding_dims> phoneme;
    for (auto& x : phoneme) x = normal(rng);
    for (int t1 = t0; t1 < end; ++t1) q.features.row(t1).head<embedding_dims>() = phoneme;
    t0 = end;
  }
  for (int t1 = 0; t1 < length; ++t1) {
    q.features(t1, embedding_dims) = float(t1) / float(length - 1);
    q.features(t1, embedding_dims + 1) = std::exp(-float(length - 1 - t1) / 2.0f);
  }
  q.mel = t(q.features);
  if (noisy)
    for (auto& x : q.mel.reshaped()) x += static_cast<float>(s.noise_scale * student_t2(rng));
  return q;
}

inline dataset make_dataset(const task_settings& s, unsigned long long seed) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 1);
  const teacher t(s.teacher_hidden, rng);
  dataset d;
  for (int i = 0; i < s.train_sequences; ++i) d.train.push_back(make_sequence(s, t, true, rng));
  for (int i = 0; i < s.validation_sequences; ++i) d.validation.push_back(make_sequence(s, t, true, rng));
  for (int i = 0; i < s.test_sequences; ++i) d.test.push_back(make_sequence(s, t, false, rng));
  return d;
}

/// Pads sequences [first, first + count) of `indices` into one batch.
inline batch make_batch(const std::vector<sequence>& pool, const std::vector<int>& indices, std::size_t first,
                        std::size_t count) {
  batch b;
  for (std::size_t i = 0; i < count; ++i) b.lengths.push_back(pool[std::size_t(indices[first + i])].length());
  b.max_frames = *std::max_element(b.lengths.begin(), b.lengths.end());
  const Eigen::Index rows = Eigen::Index(count) * b.max_frames;
  b.features = Matrix::Zero(rows, feature_dims);
  b.mel = Matrix::Zero(rows, mel_bins);
  b.stop = Vector::Zero(rows);
  for (std::size_t i = 0; i < count; ++i) {
    const sequence& q = pool[std::size_t(indices[first + i])];
    const Eigen::Index row = Eigen::Index(i) * b.max_frames;
    b.features.middleRows(row, q.length()) = q.features;
    b.mel.middleRows(row, q.length()) = q.mel;
    b.stop(row + q.length() - 1) = 1.0f;
  }
  return b;
}

inline batch make_batch(const std::vector<sequence>& pool) {
  std::vector<int> all(pool.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = int(i);
  return make_batch(pool, all, 0, pool.size());
}

/// Replaces the batch's mel targets by a circularly shifted copy with gain 4, per sequence.
inline void corrupt(batch& b, std::mt19937_64& rng) {
  for (std::size_t i = 0; i < b.lengths.size(); ++i) {
    const int length = b.lengths[i];
    std::uniform_int_distribution<int> shift_of(length / 4, 3 * length / 4);
    const int shift = shift_of(rng);
    const Eigen::Index row = Eigen::Index(i) * b.max_frames;
    const Matrix original = b.mel.middleRows(row, length);
    for (int t = 0; t < length; ++t) b.mel.row(row + t) = 4.0f * original.row((t + shift) % length);
  }
  b.kind = steadyloss::study::batch_kind::corrupted;
}

/// Writes `nan_per_sequence` NaN and one +Inf into each sequence's valid mel targets, at random
/// positions (the padding stays 0: the mask never reads it).
inline void make_non_finite(batch& b, std::mt19937_64& rng, std::size_t nan_per_sequence = 3) {
  for (std::size_t i = 0; i < b.lengths.size(); ++i) {
    float* first = b.mel.data() + Eigen::Index(i) * b.max_frames * mel_bins;  // row-major: the rows are contiguous
    steadyloss::study::poison(std::span<float>(first, std::size_t(b.lengths[i]) * mel_bins), nan_per_sequence, rng);
  }
  b.kind = steadyloss::study::batch_kind::non_finite;
}

/// The student: features -> tanh hidden -> 80 mel bins and one stop logit.
struct model {
  Matrix w1;
  RowVector b1;
  Matrix w_mel;
  RowVector b_mel;
  Vector w_stop;
  float b_stop = 0;

  model(int hidden, std::mt19937_64& rng)
      : w1(feature_dims, hidden), b1(RowVector::Zero(hidden)), w_mel(hidden, mel_bins),
        b_mel(RowVector::Zero(mel_bins)), w_stop(hidden) {
    // Glorot uniform, as Keras' default initializer.
    const auto fill = [&](auto& m, int fan_in, int fan_out) {
      const float limit = std::sqrt(6.0f / float(fan_in + fan_out));
      std::uniform_real_distribution<float> uniform(-limit, limit);
      for (auto& x : m.reshaped()) x = uniform(rng);
    };
    fill(w1, feature_dims, hidden);
    fill(w_mel, hidden, mel_bins);
    fill(w_stop, hidden, 1);
  }
  static model zeros_like(const model& m) {
    model z = m;
    z.w1.setZero();
    z.b1.setZero();
    z.w_mel.setZero();
    z.b_mel.setZero();
    z.w_stop.setZero();
    z.b_stop = 0;
    return z;
  }
};

/// Forward pass; keeps the hidden activations for backward().
struct forward_pass {
  Matrix hidden;  // [rows, hidden]
  Matrix mel;     // [rows, mel_bins]
  Vector stop;    // [rows]
};

inline void forward(const model& m, const Matrix& x, forward_pass& f) {
  f.hidden.noalias() = x * m.w1;
  f.hidden.rowwise() += m.b1;
  f.hidden = f.hidden.array().tanh().matrix();
  f.mel.noalias() = f.hidden * m.w_mel;
  f.mel.rowwise() += m.b_mel;
  f.stop.noalias() = f.hidden * m.w_stop;
  f.stop.array() += m.b_stop;
}

/// Gradients of the loss w.r.t. the parameters from d loss / d mel and d loss / d stop.
inline void backward(const model& m, const Matrix& x, const forward_pass& f, const Matrix& d_mel,
                     const Vector& d_stop, model& g, Matrix& d_hidden) {
  g.w_mel.noalias() = f.hidden.transpose() * d_mel;
  g.b_mel = d_mel.colwise().sum();
  g.w_stop.noalias() = f.hidden.transpose() * d_stop;
  g.b_stop = d_stop.sum();
  d_hidden.noalias() = d_mel * m.w_mel.transpose();
  d_hidden.noalias() += d_stop * m.w_stop.transpose();
  d_hidden.array() *= 1.0f - f.hidden.array().square();
  g.w1.noalias() = x.transpose() * d_hidden;
  g.b1 = d_hidden.colwise().sum();
}

/// Adam (Kingma & Ba 2015), bias-corrected, applied to every parameter block.
struct adam {
  double lr = 2e-2, beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8;
  model first, second;
  long long t = 0;
  explicit adam(const model& shape, double learning_rate)
      : lr(learning_rate), first(model::zeros_like(shape)), second(model::zeros_like(shape)) {}
  void step(model& params, model& grads) {
    ++t;
    const float c1 = float(1 - std::pow(beta1, double(t))), c2 = float(1 - std::pow(beta2, double(t)));
    const float b1 = float(beta1), b2 = float(beta2), rate = float(lr), eps = float(epsilon);
    auto p_blocks = blocks(params), g_blocks = blocks(grads), m_blocks = blocks(first), v_blocks = blocks(second);
    for (std::size_t k = 0; k < p_blocks.size(); ++k) {
      auto p = p_blocks[k], g = g_blocks[k], m = m_blocks[k], v = v_blocks[k];
      m = b1 * m + (1 - b1) * g;
      v = b2 * v + (1 - b2) * g.cwiseProduct(g);
      p.array() -= rate * (m.array() / c1) / ((v.array() / c2).sqrt() + eps);
    }
  }
  static std::vector<Eigen::Map<Vector>> blocks(model& m) {
    return {Eigen::Map<Vector>(m.w1.data(), m.w1.size()),       Eigen::Map<Vector>(m.b1.data(), m.b1.size()),
            Eigen::Map<Vector>(m.w_mel.data(), m.w_mel.size()), Eigen::Map<Vector>(m.b_mel.data(), m.b_mel.size()),
            Eigen::Map<Vector>(m.w_stop.data(), m.w_stop.size()), Eigen::Map<Vector>(&m.b_stop, 1)};
  }
};

}  // namespace tts
