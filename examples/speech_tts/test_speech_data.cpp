// The speech_tts data step: synthesis determinism, the phoneme/frame bookkeeping, the FFT and mel
// shapes, the training-only normalization, disjoint splits and a byte-identical cache.
#include <catch2/catch.hpp>

#include <complex>
#include <numbers>
#include <set>

#include "speech_data.hpp"

namespace {
const char* const sentence = "A visit to a strange place will bring fresh work.";
}

TEST_CASE("speech: two syntheses of one sentence give identical samples and events") {
  const auto first = speech::synthesize(sentence, "en-us", 175);
  const auto other = speech::synthesize("Another good night not to sleep in a tree.", "en", 150);
  const auto second = speech::synthesize(sentence, "en-us", 175);
  CHECK(first.sample_rate == 22050);
  REQUIRE(first.samples.size() > 22050 / 2);
  REQUIRE(!first.events.empty());
  CHECK(first.samples == second.samples);
  REQUIRE(first.events.size() == second.events.size());
  for (std::size_t k = 0; k < first.events.size(); ++k) {
    CHECK(first.events[k].name == second.events[k].name);
    CHECK(first.events[k].sample == second.events[k].sample);
  }
  CHECK(other.samples != first.samples);
}

TEST_CASE("speech: alignment of hand-made events (hop 100, 1000 samples, 11 frames)") {
  // starts 0, 250, 250 (zero-length: dropped), 260, 900 and "_" at the end (dropped):
  // boundaries ceil(start / 100) = 0, 3, 3 -> pushed to 4, 9, end 11.
  const std::vector<speech::PhonemeEvent> events = {
      {"_:", 0}, {"a", 250}, {"b", 250}, {"c", 260}, {"d", 900}, {"_", 1000}};
  const auto a = speech::align(events, 1000, 100);
  CHECK(a.phonemes == std::vector<std::string>{"_:", "b", "c", "d"});
  CHECK(a.durations == std::vector<int>{3, 1, 5, 2});
  CHECK(a.dropped == 2);
  // More phonemes than frames cannot be aligned.
  CHECK_THROWS(speech::align({{"a", 0}, {"b", 10}, {"c", 20}}, 150, 100));
}

TEST_CASE("speech: real utterance durations sum to the frame count, each >= 1 frame") {
  const auto s = speech::synthesize(sentence, "en-gb-scotland", 200);
  const auto a = speech::align(s.events, s.samples.size(), 256);
  long sum = 0;
  for (int d : a.durations) {
    CHECK(d >= 1);
    sum += d;
  }
  CHECK(sum == speech::frame_count(s.samples.size(), 256));
  CHECK(a.phonemes.size() + std::size_t(a.dropped) == s.events.size());
}

TEST_CASE("speech: the FFT matches a direct DFT") {
  std::vector<std::complex<double>> x(64);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = {std::sin(0.3 * double(i * i)), 0.0};
  auto y = x;
  speech::fft(y);
  for (std::size_t k = 0; k < x.size(); ++k) {
    std::complex<double> direct = 0;
    for (std::size_t n = 0; n < x.size(); ++n)
      direct += x[n] * std::polar(1.0, -2.0 * std::numbers::pi * double(k * n) / double(x.size()));
    CHECK(std::abs(y[k] - direct) < 1e-9);
  }
}

TEST_CASE("speech: a 1 kHz tone puts its mel energy in the filter around 1 kHz") {
  speech::Settings s;
  std::vector<std::int16_t> tone(22050);
  for (std::size_t i = 0; i < tone.size(); ++i)
    tone[i] = std::int16_t(10000 * std::sin(2 * std::numbers::pi * 1000.0 * double(i) / 22050));
  const auto mel = speech::log_mel(tone, s);
  REQUIRE(mel.size() == std::size_t(speech::frame_count(tone.size(), 256) * 80));
  CHECK(speech::frame_count(tone.size(), 256) == 22050 / 256 + 1);
  const int middle = 40;
  int best = 0;
  for (int m = 1; m < 80; ++m)
    if (mel[std::size_t(middle * 80 + m)] > mel[std::size_t(middle * 80 + best)]) best = m;
  // Filter centres: mel_to_hz(hz_to_mel(8000) * (m + 1) / 81); the one nearest 1000 Hz.
  int nearest = 0;
  for (int m = 1; m < 80; ++m)
    if (std::abs(speech::mel_to_hz(speech::hz_to_mel(8000) * (m + 1) / 81) - 1000) <
        std::abs(speech::mel_to_hz(speech::hz_to_mel(8000) * (nearest + 1) / 81) - 1000))
      nearest = m;
  CHECK(best == nearest);
}

TEST_CASE("speech: a small data set: shapes, training-only normalization, disjoint splits, cache") {
  speech::Settings s;
  s.train = 6;
  s.validation = 2;
  s.test = 2;
  const auto d = speech::build_dataset(s);
  REQUIRE(d.utterances.size() == 10);
  std::set<std::string> held_out, training;
  std::vector<double> sum(80, 0.0), square(80, 0.0);
  double frames = 0;
  for (const auto& u : d.utterances) {
    REQUIRE(u.mel.size() % 80 == 0);
    CHECK(u.frames(80) == speech::frame_count(u.samples, 256));
    long total = 0;
    for (auto duration : u.durations) {
      CHECK(duration >= 1);
      total += duration;
    }
    CHECK(total == u.frames(80));
    CHECK(u.phonemes.size() == u.durations.size());
    for (auto id : u.phonemes) CHECK((id >= 1 && id < d.inventory.size()));
    (u.split == speech::Split::train ? training : held_out).insert(speech::text_key(u.text));
    if (u.split != speech::Split::train) continue;
    const auto normalized = d.normalized(u);
    for (std::size_t i = 0; i < normalized.size(); ++i) {
      sum[i % 80] += normalized[i];
      square[i % 80] += double(normalized[i]) * normalized[i];
    }
    frames += u.frames(80);
  }
  CHECK(training.size() == 6);
  CHECK(held_out.size() == 4);
  for (const auto& key : held_out) CHECK(training.count(key) == 0);
  for (int b = 0; b < 80; ++b) {
    CHECK(std::abs(sum[std::size_t(b)] / frames) < 1e-3);
    CHECK(std::abs(square[std::size_t(b)] / frames - 1.0) < 1e-2);
  }
  // The cache: two builds serialize to the same bytes, and the bytes read back to the data set.
  const auto bytes = speech::serialize(d);
  CHECK(speech::serialize(speech::build_dataset(s)) == bytes);
  CHECK(speech::serialize(speech::deserialize(bytes)) == bytes);
}

TEST_CASE("speech: the corpus filter") {
  speech::Settings s;
  CHECK(speech::keep_sentence("A visit to a strange place will bring fresh work.", s));
  CHECK_FALSE(speech::keep_sentence("Call 555 1234 for a good time tonight.", s));  // digits
  CHECK_FALSE(speech::keep_sentence("Ask the NSA about your good future today.", s));  // acronym
  CHECK_FALSE(speech::keep_sentence("A quote without the final stop here", s));
  CHECK_FALSE(speech::keep_sentence("Be brief.", s));  // under 20 characters
  const auto sentences = speech::corpus_sentences(s);
  CHECK(sentences.size() >= 400);
  std::set<std::string> keys;
  for (const auto& text : sentences) CHECK(keys.insert(speech::text_key(text)).second);
}
