// The speech_tts data step: synthesis determinism, the phoneme/frame bookkeeping, the FFT and mel
// shapes, the training-only normalization, disjoint splits and a byte-identical cache; the fault
// injection's duration bookkeeping (faults.hpp) on hand-worked values.
#include <catch2/catch.hpp>

#include <algorithm>
#include <complex>
#include <numbers>
#include <set>

#include "faults.hpp"
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

namespace {
// A hand-made utterance: ids 5.., the given durations, 2 mel bins holding 10 x frame + bin.
speech::Utterance hand_made(const std::vector<std::uint32_t>& durations) {
  speech::Utterance u;
  std::uint32_t frames = 0;
  for (std::size_t k = 0; k < durations.size(); ++k) {
    u.phonemes.push_back(std::uint32_t(5 + k));
    frames += durations[k];
  }
  u.durations = durations;
  for (std::uint32_t t = 0; t < frames; ++t)
    for (int bin = 0; bin < 2; ++bin) u.mel.push_back(float(10 * t + std::uint32_t(bin)));
  return u;
}
using durations = std::vector<std::uint32_t>;
}  // namespace

TEST_CASE("faults: durations rescaled to another frame count (hand-worked)") {
  using speech::faults::rescale_durations;
  // cumulative 3, 4, 9, 11 of 11 -> x 22 / 11: boundaries 6, 8, 18, 22.
  CHECK(rescale_durations({3, 1, 5, 2}, 22) == durations{6, 2, 10, 4});
  CHECK(rescale_durations({3, 1, 5, 2}, 11) == durations{3, 1, 5, 2});
  // x 6 / 11, half up: 23/11 = 2, 29/11 = 2 (pushed to 3), 59/11 = 5, 6.
  CHECK(rescale_durations({3, 1, 5, 2}, 6) == durations{2, 1, 2, 1});
  // x 5 / 10: 0.5 -> 1, 1.0 -> 1 (pushed to 2), 5.
  CHECK(rescale_durations({1, 1, 8}, 5) == durations{1, 1, 3});
  // x 4 / 10: 3, 3 (pushed to 4), 4 (pushed to 5 > 4), then pulled back from the end: 1, 2, 3.
  CHECK(rescale_durations({7, 1, 1, 1}, 4) == durations{1, 1, 1, 1});
  CHECK_THROWS_AS(rescale_durations({1, 1, 1}, 2), std::invalid_argument);
  CHECK_THROWS_AS(rescale_durations({}, 2), std::invalid_argument);
}

TEST_CASE("faults: a swapped, a truncated and a loud pair (hand-worked)") {
  const auto a = hand_made({3, 1, 5, 2});         // 11 frames
  const auto b = hand_made({4, 4, 4, 4, 4, 2});   // 22 frames
  const auto s = speech::faults::swapped(a, b, 2);
  CHECK(s.kind == speech::faults::fault::swapped);
  CHECK(s.phonemes == a.phonemes);
  CHECK(s.frames == 22);
  CHECK(s.durations == durations{6, 2, 10, 4});
  CHECK(s.mel == b.mel);

  const auto t = speech::faults::truncated(a, 0.5, 2);  // round(5.5) = 6 frames kept
  CHECK(t.frames == 6);
  CHECK(t.phonemes == a.phonemes);
  CHECK(t.durations == durations{2, 1, 2, 1});
  CHECK(t.mel == std::vector<float>(a.mel.begin(), a.mel.begin() + 12));
  // round(1.1) = 1 frame would leave phonemes without one: 4 frames are kept, one each.
  const auto short_one = speech::faults::truncated(a, 0.1, 2);
  CHECK(short_one.frames == 4);
  CHECK(short_one.durations == durations{1, 1, 1, 1});

  const auto l = speech::faults::loud(a, 20.0, 2);  // x10 in magnitude: + ln 10 in log-magnitude
  CHECK(l.durations == a.durations);
  REQUIRE(l.mel.size() == a.mel.size());
  for (std::size_t i = 0; i < a.mel.size(); ++i) CHECK(l.mel[i] == Approx(a.mel[i] + 2.302585).epsilon(1e-6));
}

TEST_CASE("faults: the bad pairs of a seed") {
  std::uint64_t state = 7, again = 7;
  const auto bad = speech::faults::choose_bad_pairs(300, 0.1, state);
  CHECK(bad.size() == 30);
  CHECK(std::set<std::size_t>(bad.begin(), bad.end()).size() == 30);
  for (auto i : bad) CHECK(i < 300);
  CHECK(speech::faults::choose_bad_pairs(300, 0.1, again) == bad);
  std::uint64_t other = 8;
  CHECK(speech::faults::choose_bad_pairs(300, 0.1, other) != bad);
  std::uint64_t any = 1;
  CHECK(speech::faults::choose_bad_pairs(10, 0.0, any).empty());
  auto all = speech::faults::choose_bad_pairs(10, 1.0, any);
  std::sort(all.begin(), all.end());
  CHECK(all == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK_THROWS_AS(speech::faults::choose_bad_pairs(10, 1.5, any), std::invalid_argument);
  using speech::faults::fault;
  CHECK(speech::faults::kind_in_turn(0) == fault::swapped);
  CHECK(speech::faults::kind_in_turn(1) == fault::truncated);
  CHECK(speech::faults::kind_in_turn(2) == fault::loud);
  CHECK(speech::faults::kind_in_turn(3) == fault::swapped);

  // A swapped pair takes another utterance's audio, its durations summing to that audio's frames.
  const auto a = hand_made({3, 1, 5, 2}), b = hand_made({4, 4, 4, 4, 4, 2}), c = hand_made({1, 1});
  const std::vector<const speech::Utterance*> train = {&a, &b, &c};
  std::uint64_t draw = 3;
  for (int k = 0; k < 20; ++k) {
    const auto p = speech::faults::make_bad(train, 0, fault::swapped, 2, draw);
    CHECK(p.mel == b.mel);  // c has 2 frames, too few for a's 4 phonemes; a is itself
    CHECK(p.durations == durations{6, 2, 10, 4});
    const auto t = speech::faults::make_bad(train, 1, fault::truncated, 2, draw);
    CHECK((t.frames >= 9 && t.frames <= 15));  // 22 x [0.4, 0.7) rounded
    long sum = 0;
    for (auto d : t.durations) sum += d;
    CHECK(sum == t.frames);
  }
}
