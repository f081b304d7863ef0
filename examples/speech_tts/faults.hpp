#pragma once
// Real failure modes of a TTS training set, as pure functions on one (text, audio) pair (tested
// in test_speech_data.cpp; README.md says why each is what it is):
//
//   rescale_durations  a phoneme sequence's durations redistributed over another frame count,
//                      every phoneme keeping at least one frame, the sum exact: what a forced
//                      aligner makes of a text and an audio that do not belong together
//   swapped            the text of one utterance with the audio of another
//   truncated          the audio cut off (the first keep_fraction of its frames), the text whole
//   loud               a gain error: the audio 20 dB too loud (a log-mel shift of ln 10 per bin)
//   choose_bad_pairs   which training pairs are bad, and how, from a seed
//
// Every choice is drawn from speech::splitmix64 (not std:: distributions, whose algorithms differ
// between standard libraries), so a seed gives the same bad pairs everywhere.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "speech_data.hpp"

namespace speech::faults {

enum class fault : unsigned char { none, swapped, truncated, loud };

inline const char* fault_name(fault f) {
  switch (f) {
    case fault::none: return "clean";
    case fault::swapped: return "swapped";
    case fault::truncated: return "truncated";
    case fault::loud: return "loud";
  }
  return "?";
}

/// A training pair as the model sees it: phoneme ids, durations in frames (summing to frames),
/// log-mel frames (frames x mel_bins, not normalized) and what was done to it.
struct pair {
  std::vector<std::uint32_t> phonemes, durations;
  std::vector<float> mel;
  int frames = 0;
  fault kind = fault::none;
};

inline pair clean_pair(const Utterance& u, int mel_bins) {
  return {u.phonemes, u.durations, u.mel, u.frames(mel_bins), fault::none};
}

/// The durations spread over `frames` in proportion: boundary k (after phoneme k) at
/// round(cumulative_k x frames / total), half up, in integers; then, as the alignment does,
/// pushed forward so every phoneme has a frame and pulled back from the end so the last boundary
/// is `frames`. Throws when there are more phonemes than frames.
inline std::vector<std::uint32_t> rescale_durations(const std::vector<std::uint32_t>& durations, int frames) {
  const auto phonemes = durations.size();
  if (phonemes == 0 || frames < 0 || std::size_t(frames) < phonemes)
    throw std::invalid_argument("rescale_durations: " + std::to_string(phonemes) + " phonemes cannot share " +
                                std::to_string(frames) + " frames");
  std::uint64_t total = 0;
  for (auto d : durations) total += d;
  if (total == 0) throw std::invalid_argument("rescale_durations: the durations sum to 0");
  std::vector<std::int64_t> boundary(phonemes + 1, 0);
  std::uint64_t cumulative = 0;
  for (std::size_t k = 0; k < phonemes; ++k) {
    cumulative += durations[k];
    boundary[k + 1] = std::int64_t((cumulative * std::uint64_t(frames) + total / 2) / total);
  }
  boundary[phonemes] = frames;
  for (std::size_t k = 1; k <= phonemes; ++k) boundary[k] = std::max(boundary[k], boundary[k - 1] + 1);
  boundary[phonemes] = frames;
  for (std::size_t k = phonemes; k-- > 1;) boundary[k] = std::min(boundary[k], boundary[k + 1] - 1);
  std::vector<std::uint32_t> out(phonemes);
  for (std::size_t k = 0; k < phonemes; ++k) out[k] = std::uint32_t(boundary[k + 1] - boundary[k]);
  return out;
}

/// The text (phonemes) of `text` with the audio (mel frames) of `audio`; the text's durations
/// rescaled to the audio's frames. Needs audio frames >= text phonemes.
inline pair swapped(const Utterance& text, const Utterance& audio, int mel_bins) {
  pair p;
  p.phonemes = text.phonemes;
  p.frames = audio.frames(mel_bins);
  p.durations = rescale_durations(text.durations, p.frames);
  p.mel = audio.mel;
  p.kind = fault::swapped;
  return p;
}

/// The first round(frames x keep_fraction) frames of the audio (at least one per phoneme), the
/// whole text, its durations rescaled to the frames kept.
inline pair truncated(const Utterance& u, double keep_fraction, int mel_bins) {
  const int frames = u.frames(mel_bins);
  const int keep = std::clamp(int(std::lround(frames * keep_fraction)), int(u.phonemes.size()), frames);
  pair p;
  p.phonemes = u.phonemes;
  p.frames = keep;
  p.durations = rescale_durations(u.durations, keep);
  p.mel.assign(u.mel.begin(), u.mel.begin() + std::ptrdiff_t(keep) * mel_bins);
  p.kind = fault::truncated;
  return p;
}

/// The log-mel of the audio made `gain_db` louder: the frames hold log magnitudes (natural log),
/// so a gain of g dB adds ln(10^(g/20)) to every bin (exact above the log floor).
inline pair loud(const Utterance& u, double gain_db, int mel_bins) {
  pair p = clean_pair(u, mel_bins);
  const float shift = float(gain_db / 20.0 * std::log(10.0));
  for (auto& v : p.mel) v += shift;
  p.kind = fault::loud;
  return p;
}

inline constexpr double loud_gain_db = 20.0;
inline constexpr double keep_lo = 0.4, keep_hi = 0.7;  // a truncated pair keeps 40-70% of its audio

/// A uniform double in [0, 1) from splitmix64 (53 bits).
inline double uniform(std::uint64_t& state) { return double(splitmix64(state) >> 11) * 0x1.0p-53; }

/// An index in [0, n) from splitmix64 (n > 0; the modulo bias is below 2^-40 for n < 2^24).
inline std::size_t below(std::uint64_t& state, std::size_t n) { return std::size_t(splitmix64(state) % n); }

/// A bad version of utterance `index` of `train`, of kind `kind`: swapped with a partner drawn
/// from the others (one with at least as many frames as this text has phonemes), truncated to a
/// fraction drawn from [keep_lo, keep_hi), or loud.
inline pair make_bad(const std::vector<const Utterance*>& train, std::size_t index, fault kind, int mel_bins,
                     std::uint64_t& state) {
  const Utterance& u = *train[index];
  switch (kind) {
    case fault::swapped: {
      if (train.size() < 2) break;
      for (int attempt = 0; attempt < 1000; ++attempt) {
        const std::size_t partner = below(state, train.size());
        if (partner != index && std::size_t(train[partner]->frames(mel_bins)) >= u.phonemes.size())
          return swapped(u, *train[partner], mel_bins);
      }
      break;
    }
    case fault::truncated: return truncated(u, keep_lo + (keep_hi - keep_lo) * uniform(state), mel_bins);
    case fault::loud: return loud(u, loud_gain_db, mel_bins);
    case fault::none: break;
  }
  return clean_pair(u, mel_bins);  // no partner possible (a one-utterance set): the pair stays clean
}

/// The kind of the k-th bad pair: swapped, truncated, loud in turn, so every kind is present in
/// equal parts (the first kinds get the remainder).
inline fault kind_in_turn(std::size_t k) {
  constexpr fault kinds[] = {fault::swapped, fault::truncated, fault::loud};
  return kinds[k % 3];
}

/// Which of n training pairs are bad: round(fraction x n) distinct indices (a partial
/// Fisher-Yates shuffle driven by splitmix64), in the order drawn.
inline std::vector<std::size_t> choose_bad_pairs(std::size_t n, double fraction, std::uint64_t& state) {
  if (!(fraction >= 0.0 && fraction <= 1.0))
    throw std::invalid_argument("choose_bad_pairs: fraction must be in [0, 1], got " + std::to_string(fraction));
  const auto count = std::size_t(std::llround(fraction * double(n)));
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  for (std::size_t i = 0; i < count; ++i) std::swap(order[i], order[i + below(state, n - i)]);
  order.resize(count);
  return order;
}

}  // namespace speech::faults
