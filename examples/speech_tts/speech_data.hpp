// The speech_tts example's data step: English sentences from the fortunes-min corpus, spoken by
// espeak-ng (libespeak-ng) at its native 22050 Hz, aligned to phonemes from espeak-ng's phoneme
// events, turned into 80-bin log-mel frames, split into train / validation / test with no text
// shared, normalized per bin with training statistics, and cached in one deterministic file.
// README.md beside this file states every choice; POSIX only (each synthesis runs in a child
// process, see synthesize()).
#pragma once

#include <espeak-ng/speak_lib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <numbers>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace speech {

static_assert(std::endian::native == std::endian::little,
              "speech_data: the cache format is written little-endian by plain copies");

struct Settings {
  int train = 300, validation = 40, test = 40;      // utterances per split
  std::uint64_t split_seed = 20240601;               // the shuffle that deals sentences to splits
  std::vector<std::string> corpus_files = {"/usr/share/games/fortunes/fortunes",
                                           "/usr/share/games/fortunes/literature",
                                           "/usr/share/games/fortunes/riddles"};
  std::size_t min_chars = 20, max_chars = 100, min_words = 4;
  std::vector<std::string> voices = {"en-us", "en", "en-gb-scotland"};
  std::vector<int> rates_wpm = {150, 175, 200};
  int sample_rate = 22050;                           // espeak-ng's native rate, checked at synthesis
  int hop = 256, window = 1024, mel_bins = 80;
  double mel_fmin_hz = 0.0, mel_fmax_hz = 8000.0;
  double log_floor = 1e-5;                           // log(max(mel, floor)), as HiFi-GAN's recipe

  // Everything the cache's bytes depend on, one key=value a line (the cache key and header).
  std::string describe() const {
    std::ostringstream out;
    out << "format=steadyloss speech_data 1\nespeak_ng=" << espeak_Info(nullptr) << '\n'
        << "train=" << train << "\nvalidation=" << validation << "\ntest=" << test
        << "\nsplit_seed=" << split_seed << '\n';
    for (const auto& f : corpus_files) {
      std::error_code ec;
      out << "corpus=" << f << " bytes=" << std::filesystem::file_size(f, ec) << '\n';
    }
    out << "chars=" << min_chars << ".." << max_chars << "\nmin_words=" << min_words << "\nvoices=";
    for (const auto& v : voices) out << v << ',';
    out << "\nrates_wpm=";
    for (int r : rates_wpm) out << r << ',';
    out << "\nsample_rate=" << sample_rate << "\nhop=" << hop << "\nwindow=" << window
        << "\nmel_bins=" << mel_bins << "\nmel_hz=" << mel_fmin_hz << ".." << mel_fmax_hz
        << "\nlog_floor=" << log_floor << '\n';
    return out.str();
  }
};

// ------------------------------------------------------------------------------------- corpus

// The comparison key of a sentence: its letters, lower-cased. Two sentences with one key are one
// text (punctuation or spacing apart), so splits are disjoint in keys, not only in strings.
inline std::string text_key(const std::string& text) {
  std::string key;
  for (unsigned char c : text)
    if (std::isalpha(c)) key += static_cast<char>(std::tolower(c));
  return key;
}

// A fortune kept for speech: plain English a synthesizer reads as words. Only letters, spaces and
// , . ' ! ? ; : - (no digits, quotes, brackets: read aloud as symbols or dropped); no "--" (the
// attribution lines "-- Author"); no word with two capitals (acronyms are spelled letter by
// letter); ends with . ! or ?; min_chars..max_chars characters and min_words words.
inline bool keep_sentence(const std::string& text, const Settings& s) {
  if (text.size() < s.min_chars || text.size() > s.max_chars) return false;
  if (text.find("--") != std::string::npos) return false;
  if (text.back() != '.' && text.back() != '!' && text.back() != '?') return false;
  std::size_t words = 0, capitals = 0;
  bool in_word = false;
  for (unsigned char c : text) {
    if (!std::isalpha(c) && !std::strchr(" ,.'!?;:-", c)) return false;
    if (c == ' ') {
      in_word = false;
      capitals = 0;
      continue;
    }
    if (!in_word) ++words;
    in_word = true;
    if (std::isupper(c) && ++capitals >= 2) return false;
  }
  return words >= s.min_words;
}

// The fortune files' entries ("%" lines separate them), whitespace collapsed, filtered by
// keep_sentence, first occurrence of each text_key kept, in file order.
inline std::vector<std::string> corpus_sentences(const Settings& s) {
  std::vector<std::string> kept;
  std::set<std::string> seen;
  for (const auto& path : s.corpus_files) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("speech_data: cannot read the corpus file " + path +
                                      " (Debian package fortunes-min)");
    std::string line, entry;
    auto flush = [&] {
      std::string text;
      std::istringstream words(entry);
      for (std::string w; words >> w;) text += (text.empty() ? "" : " ") + w;
      entry.clear();
      if (keep_sentence(text, s) && seen.insert(text_key(text)).second) kept.push_back(text);
    };
    while (std::getline(in, line)) {
      if (line == "%") flush();
      else entry += line + ' ';
    }
    flush();
  }
  return kept;
}

// splitmix64: the shuffle must deal the same sentences on every standard library
// (std::shuffle's algorithm is unspecified).
inline std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

enum class Split : std::uint8_t { train = 0, validation = 1, test = 2 };
inline const char* split_name(Split s) {
  return s == Split::train ? "train" : s == Split::validation ? "validation" : "test";
}

struct Assigned {
  std::string text;
  Split split;
};

// Fisher-Yates over the corpus with splitmix64(split_seed); the first `test` sentences are the
// held-out set, the next `validation` the validation set, the next `train` the training set.
inline std::vector<Assigned> assign_splits(std::vector<std::string> sentences, const Settings& s) {
  const std::size_t wanted = static_cast<std::size_t>(s.train + s.validation + s.test);
  if (sentences.size() < wanted)
    throw std::invalid_argument("speech_data: train + validation + test must be <= " +
                                std::to_string(sentences.size()) + " (sentences kept), got " +
                                std::to_string(wanted));
  std::uint64_t state = s.split_seed;
  for (std::size_t i = sentences.size() - 1; i > 0; --i)
    std::swap(sentences[i], sentences[splitmix64(state) % (i + 1)]);
  std::vector<Assigned> out;
  for (std::size_t i = 0; i < wanted; ++i)
    out.push_back({sentences[i], i < std::size_t(s.test) ? Split::test
                                 : i < std::size_t(s.test + s.validation) ? Split::validation
                                                                          : Split::train});
  return out;
}

// ---------------------------------------------------------------------------------- synthesis

struct PhonemeEvent {
  std::string name;  // espeak-ng's phoneme mnemonic ("eI", "_:" a pause, ...)
  int sample;        // the sample where it starts, from the start of the utterance
};

struct Synthesis {
  int sample_rate = 0;
  std::vector<std::int16_t> samples;
  std::vector<PhonemeEvent> events;
};

namespace detail {
inline Synthesis* current_synthesis = nullptr;
inline int collect(short* wav, int count, espeak_EVENT* event) {
  for (; event->type != espeakEVENT_LIST_TERMINATED; ++event)
    if (event->type == espeakEVENT_PHONEME)
      current_synthesis->events.push_back(
          {std::string(event->id.string, strnlen(event->id.string, sizeof event->id.string)),
           event->sample});
  if (wav) current_synthesis->samples.insert(current_synthesis->samples.end(), wav, wav + count);
  return 0;
}
inline void write_all(int fd, const void* data, std::size_t bytes) {
  auto p = static_cast<const char*>(data);
  while (bytes) {
    ssize_t n = ::write(fd, p, bytes);
    if (n <= 0) _exit(3);
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
}
inline bool read_all(int fd, void* data, std::size_t bytes) {
  auto p = static_cast<char*>(data);
  while (bytes) {
    ssize_t n = ::read(fd, p, bytes);
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
  return true;
}
}  // namespace detail

// Speaks `text` with espeak-ng (AUDIO_OUTPUT_SYNCHRONOUS, phoneme events on) in a child process.
// Why a child: libespeak-ng 1.51 carries generator state from one message to the next (rand()
// noise, pitch flutter), so the same sentence synthesized twice in one process gives different
// samples, and espeak_Terminate followed by espeak_Initialize hangs; a forked child starts from
// the untouched library every time, so a synthesis depends on its arguments only.
inline Synthesis synthesize(const std::string& text, const std::string& voice, int rate_wpm) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("speech_data: pipe failed");
  std::fflush(nullptr);
  pid_t child = ::fork();
  if (child < 0) throw std::runtime_error("speech_data: fork failed");
  if (child == 0) {
    ::close(fds[0]);
    std::srand(1);
    Synthesis result;
    detail::current_synthesis = &result;
    int status = 0;
    result.sample_rate = espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, nullptr,
                                           espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_DONT_EXIT);
    espeak_SetSynthCallback(detail::collect);
    if (result.sample_rate <= 0 || espeak_SetVoiceByName(voice.c_str()) != EE_OK ||
        espeak_SetParameter(espeakRATE, rate_wpm, 0) != EE_OK ||
        espeak_Synth(text.c_str(), text.size() + 1, 0, POS_CHARACTER, 0,
                     espeakCHARS_UTF8 | espeakENDPAUSE, nullptr, nullptr) != EE_OK)
      status = 1;
    std::int64_t header[3] = {status, result.sample_rate, std::int64_t(result.samples.size())};
    detail::write_all(fds[1], header, sizeof header);
    detail::write_all(fds[1], result.samples.data(), result.samples.size() * 2);
    std::int64_t events = std::int64_t(result.events.size());
    detail::write_all(fds[1], &events, sizeof events);
    for (const auto& e : result.events) {
      std::int64_t fields[2] = {std::int64_t(e.name.size()), e.sample};
      detail::write_all(fds[1], fields, sizeof fields);
      detail::write_all(fds[1], e.name.data(), e.name.size());
    }
    _exit(0);
  }
  ::close(fds[1]);
  Synthesis result;
  std::int64_t header[3] = {1, 0, 0}, events = 0;
  bool ok = detail::read_all(fds[0], header, sizeof header) && header[0] == 0;
  if (ok) {
    result.sample_rate = int(header[1]);
    result.samples.resize(std::size_t(header[2]));
    ok = detail::read_all(fds[0], result.samples.data(), result.samples.size() * 2) &&
         detail::read_all(fds[0], &events, sizeof events);
    for (std::int64_t i = 0; ok && i < events; ++i) {
      std::int64_t fields[2];
      ok = detail::read_all(fds[0], fields, sizeof fields);
      std::string name(ok ? std::size_t(fields[0]) : 0, '\0');
      ok = ok && detail::read_all(fds[0], name.data(), name.size());
      result.events.push_back({name, int(fields[1])});
    }
  }
  ::close(fds[0]);
  int wait_status = 0;
  ::waitpid(child, &wait_status, 0);
  if (!ok || !WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0)
    throw std::runtime_error("speech_data: espeak-ng failed on voice '" + voice + "', rate " +
                             std::to_string(rate_wpm) + ", text '" + text + "'");
  return result;
}

// ---------------------------------------------------------------------------------- alignment

// Frames are centred at sample t * hop (the signal reflect-padded by window / 2 at both ends), so
// an utterance of n samples has n / hop + 1 frames.
inline int frame_count(std::size_t samples, int hop) { return int(samples / std::size_t(hop)) + 1; }

struct Alignment {
  std::vector<std::string> phonemes;
  std::vector<int> durations;  // frames, each >= 1, summing to the utterance's frame count
  int dropped = 0;             // zero-length events dropped
};

// Phoneme k spans the samples from its event to the next kept event (the last one to the end;
// the first one from sample 0). An event zero samples long (the same sample as the next event, or
// at the end of the audio: espeak-ng's clause-end marker "_") is dropped. Phoneme k owns the
// frames whose centres lie in its span: boundary b_k = ceil(start_k / hop), b_0 = 0, b_P = frames.
// A phoneme shorter than a hop can own no centre; it gets one frame by pushing later boundaries
// forward (b_k = max(b_k, b_{k-1} + 1)) and then pulling them back from the end
// (b_k = min(b_k, b_{k+1} - 1)), which keeps the sum. An utterance with fewer frames than
// phonemes cannot be aligned and throws.
inline Alignment align(const std::vector<PhonemeEvent>& events, std::size_t samples, int hop) {
  Alignment out;
  std::vector<long> starts;
  for (std::size_t k = 0; k < events.size(); ++k) {
    long start = events[k].sample;
    long next = k + 1 < events.size() ? events[k + 1].sample : long(samples);
    if (next <= start || start >= long(samples)) {
      ++out.dropped;
      continue;
    }
    out.phonemes.push_back(events[k].name);
    starts.push_back(start);
  }
  const int frames = frame_count(samples, hop);
  const int count = int(starts.size());
  if (count == 0 || count > frames)
    throw std::runtime_error("speech_data: cannot align " + std::to_string(count) +
                             " phonemes to " + std::to_string(frames) + " frames");
  std::vector<int> bound(std::size_t(count) + 1);
  bound[0] = 0;
  bound[std::size_t(count)] = frames;
  for (int k = 1; k < count; ++k)
    bound[std::size_t(k)] = std::max(int((starts[std::size_t(k)] + hop - 1) / hop),
                                     bound[std::size_t(k) - 1] + 1);
  for (int k = count - 1; k >= 1; --k)
    bound[std::size_t(k)] = std::min(bound[std::size_t(k)], bound[std::size_t(k) + 1] - 1);
  for (int k = 0; k < count; ++k)
    out.durations.push_back(bound[std::size_t(k) + 1] - bound[std::size_t(k)]);
  return out;
}

// ------------------------------------------------------------------------------------------ mel

// In-place iterative radix-2 FFT (size a power of two). A plain transform keeps the data step free
// of FFTW and bit-reproducible (FFTW's planner may pick different algorithms from run to run).
inline void fft(std::vector<std::complex<double>>& a) {
  const std::size_t n = a.size();
  for (std::size_t i = 1, j = 0; i < n; ++i) {
    std::size_t bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) std::swap(a[i], a[j]);
  }
  for (std::size_t len = 2; len <= n; len <<= 1) {
    const double angle = -2.0 * std::numbers::pi / double(len);
    for (std::size_t i = 0; i < n; i += len)
      for (std::size_t k = 0; k < len / 2; ++k) {
        const std::complex<double> w = std::polar(1.0, angle * double(k));
        const auto u = a[i + k], v = a[i + k + len / 2] * w;
        a[i + k] = u + v;
        a[i + k + len / 2] = u - v;
      }
  }
}

inline double hz_to_mel(double hz) { return 2595.0 * std::log10(1.0 + hz / 700.0); }
inline double mel_to_hz(double mel) { return 700.0 * (std::pow(10.0, mel / 2595.0) - 1.0); }

// HTK-style triangular filters (mel = 2595 log10(1 + f / 700)), peak 1, mel_bins x (window/2+1).
inline std::vector<double> mel_filterbank(const Settings& s) {
  const int bins = s.window / 2 + 1;
  std::vector<double> edges(std::size_t(s.mel_bins) + 2);
  for (std::size_t i = 0; i < edges.size(); ++i)
    edges[i] = mel_to_hz(hz_to_mel(s.mel_fmin_hz) + (hz_to_mel(s.mel_fmax_hz) - hz_to_mel(s.mel_fmin_hz)) *
                                                     double(i) / double(edges.size() - 1));
  std::vector<double> bank(std::size_t(s.mel_bins * bins), 0.0);
  for (int m = 0; m < s.mel_bins; ++m)
    for (int b = 0; b < bins; ++b) {
      const double hz = double(b) * s.sample_rate / s.window;
      const double lo = edges[std::size_t(m)], mid = edges[std::size_t(m) + 1], hi = edges[std::size_t(m) + 2];
      const double w = hz <= mid ? (hz - lo) / (mid - lo) : (hi - hz) / (hi - mid);
      bank[std::size_t(m * bins + b)] = std::max(0.0, w);
    }
  return bank;
}

// log(max(mel magnitude, log_floor)) of samples / 32768: frames x mel_bins, row-major. Periodic
// Hann window of `window` samples, frames centred at t * hop over the reflect-padded signal.
inline std::vector<float> log_mel(const std::vector<std::int16_t>& samples, const Settings& s) {
  const long n = long(samples.size()), half = s.window / 2;
  if (n <= half) throw std::invalid_argument("speech_data: an utterance must be longer than half a window");
  auto at = [&](long i) {  // reflect padding, as numpy.pad(mode="reflect")
    if (i < 0) i = -i;
    if (i >= n) i = 2 * (n - 1) - i;
    return double(samples[std::size_t(i)]) / 32768.0;
  };
  const int frames = frame_count(samples.size(), s.hop), bins = s.window / 2 + 1;
  const auto bank = mel_filterbank(s);
  std::vector<double> hann(std::size_t(s.window));
  for (int i = 0; i < s.window; ++i) hann[std::size_t(i)] = 0.5 - 0.5 * std::cos(2.0 * std::numbers::pi * i / s.window);
  std::vector<float> out(std::size_t(frames * s.mel_bins));
  std::vector<std::complex<double>> buffer(std::size_t(s.window));
  std::vector<double> magnitude(static_cast<std::size_t>(bins));
  for (int t = 0; t < frames; ++t) {
    for (int i = 0; i < s.window; ++i)
      buffer[std::size_t(i)] = at(long(t) * s.hop - half + i) * hann[std::size_t(i)];
    fft(buffer);
    for (int b = 0; b < bins; ++b) magnitude[std::size_t(b)] = std::abs(buffer[std::size_t(b)]);
    for (int m = 0; m < s.mel_bins; ++m) {
      double sum = 0.0;
      for (int b = 0; b < bins; ++b) sum += bank[std::size_t(m * bins + b)] * magnitude[std::size_t(b)];
      out[std::size_t(t * s.mel_bins + m)] = float(std::log(std::max(sum, s.log_floor)));
    }
  }
  return out;
}

// -------------------------------------------------------------------------------------- dataset

struct Utterance {
  Split split = Split::train;
  std::string text, voice;
  int rate_wpm = 0;
  std::uint32_t samples = 0;
  std::vector<std::uint32_t> phonemes;   // ids into Dataset::inventory (0 is left for padding)
  std::vector<std::uint32_t> durations;  // frames per phoneme, summing to frames()
  std::vector<float> mel;                // frames x mel_bins log-mel, NOT normalized
  int frames(int mel_bins) const { return int(mel.size()) / mel_bins; }
};

struct Dataset {
  std::string settings;                // Settings::describe() of the run that made it
  int mel_bins = 80, sample_rate = 22050;
  std::vector<std::string> inventory;  // inventory[0] = "<pad>", then the phonemes, sorted
  std::vector<float> mean, stddev;     // per mel bin, over every training frame
  std::vector<Utterance> utterances;   // test, then validation, then train (the dealing order)

  // (log_mel - mean) / stddev with the training statistics, frames x mel_bins.
  std::vector<float> normalized(const Utterance& u) const {
    std::vector<float> out(u.mel.size());
    for (std::size_t i = 0; i < out.size(); ++i) {
      const std::size_t bin = i % std::size_t(mel_bins);
      out[i] = (u.mel[i] - mean[bin]) / stddev[bin];
    }
    return out;
  }
};

// Per-bin mean and standard deviation over the training split's frames only (double sums, in
// utterance order); a standard deviation below 1e-5 is raised to 1e-5.
inline void training_statistics(Dataset& d) {
  std::vector<double> sum(std::size_t(d.mel_bins), 0.0), square(std::size_t(d.mel_bins), 0.0);
  double count = 0;
  for (const auto& u : d.utterances) {
    if (u.split != Split::train) continue;
    for (std::size_t i = 0; i < u.mel.size(); ++i) {
      sum[i % sum.size()] += u.mel[i];
      square[i % sum.size()] += double(u.mel[i]) * u.mel[i];
    }
    count += u.frames(d.mel_bins);
  }
  if (count == 0) throw std::invalid_argument("speech_data: train must be >= 1, got 0");
  d.mean.assign(sum.size(), 0.f);
  d.stddev.assign(sum.size(), 0.f);
  for (std::size_t b = 0; b < sum.size(); ++b) {
    const double mean = sum[b] / count;
    d.mean[b] = float(mean);
    d.stddev[b] = float(std::max(1e-5, std::sqrt(std::max(0.0, square[b] / count - mean * mean))));
  }
}

// Utterance i of a split is spoken by voices[i % V] at rates_wpm[(i / V) % R]: every voice and
// rate pair in turn, in every split.
inline Dataset build_dataset(const Settings& s, const std::function<void(int, int)>& progress = {}) {
  Dataset d;
  d.settings = s.describe();
  d.mel_bins = s.mel_bins;
  d.sample_rate = s.sample_rate;
  const auto assigned = assign_splits(corpus_sentences(s), s);
  std::vector<std::vector<std::string>> names;
  int index_in_split[3] = {0, 0, 0};
  for (const auto& a : assigned) {
    const int i = index_in_split[int(a.split)]++;
    const std::size_t voices = s.voices.size();
    Utterance u;
    u.split = a.split;
    u.text = a.text;
    u.voice = s.voices[std::size_t(i) % voices];
    u.rate_wpm = s.rates_wpm[(std::size_t(i) / voices) % s.rates_wpm.size()];
    const auto synthesis = synthesize(u.text, u.voice, u.rate_wpm);
    if (synthesis.sample_rate != s.sample_rate)
      throw std::runtime_error("speech_data: espeak-ng speaks at " + std::to_string(synthesis.sample_rate) +
                               " Hz, the settings expect " + std::to_string(s.sample_rate));
    auto alignment = align(synthesis.events, synthesis.samples.size(), s.hop);
    u.samples = std::uint32_t(synthesis.samples.size());
    u.durations.assign(alignment.durations.begin(), alignment.durations.end());
    u.mel = log_mel(synthesis.samples, s);
    names.push_back(std::move(alignment.phonemes));
    d.utterances.push_back(std::move(u));
    if (progress) progress(int(d.utterances.size()), int(assigned.size()));
  }
  std::set<std::string> unique;
  for (const auto& list : names) unique.insert(list.begin(), list.end());
  d.inventory = {"<pad>"};
  d.inventory.insert(d.inventory.end(), unique.begin(), unique.end());
  for (std::size_t k = 0; k < d.utterances.size(); ++k)
    for (const auto& name : names[k])
      d.utterances[k].phonemes.push_back(std::uint32_t(
          std::lower_bound(d.inventory.begin() + 1, d.inventory.end(), name) - d.inventory.begin()));
  training_statistics(d);
  return d;
}

// ---------------------------------------------------------------------------------------- cache

// Little-endian: "SLSPEECH", u32 version 1, settings text, phoneme inventory (u32 count, strings),
// mean and stddev (mel_bins f32 each), u32 utterance count, then per utterance: u8 split, text,
// voice, u32 rate_wpm, u32 samples, u32 phoneme count, u32 ids, u32 durations, u32 frames,
// frames x mel_bins f32 log-mel. A string is u32 byte count + bytes. Nothing else (no time, no
// path), so the same settings give the same bytes.
namespace detail {
inline void put_u32(std::string& out, std::uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }
inline void put_string(std::string& out, const std::string& v) { put_u32(out, std::uint32_t(v.size())); out += v; }
template <class T>
void put_array(std::string& out, const std::vector<T>& v) {
  out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}
struct Reader {
  const std::string& bytes;
  std::size_t at = 0;
  void need(std::size_t n) {
    if (bytes.size() - at < n) throw std::runtime_error("speech_data: the cache file is truncated");
  }
  std::uint32_t u32() { std::uint32_t v; need(4); std::memcpy(&v, bytes.data() + at, 4); at += 4; return v; }
  std::string string() { const auto n = u32(); need(n); at += n; return bytes.substr(at - n, n); }
  template <class T>
  std::vector<T> array(std::size_t n) {
    need(n * sizeof(T));
    std::vector<T> v(n);
    std::memcpy(v.data(), bytes.data() + at, n * sizeof(T));
    at += n * sizeof(T);
    return v;
  }
};
}  // namespace detail

inline std::string serialize(const Dataset& d) {
  std::string out = "SLSPEECH";
  detail::put_u32(out, 1);
  detail::put_string(out, d.settings);
  detail::put_u32(out, std::uint32_t(d.mel_bins));
  detail::put_u32(out, std::uint32_t(d.sample_rate));
  detail::put_u32(out, std::uint32_t(d.inventory.size()));
  for (const auto& name : d.inventory) detail::put_string(out, name);
  detail::put_array(out, d.mean);
  detail::put_array(out, d.stddev);
  detail::put_u32(out, std::uint32_t(d.utterances.size()));
  for (const auto& u : d.utterances) {
    out += char(u.split);
    detail::put_string(out, u.text);
    detail::put_string(out, u.voice);
    detail::put_u32(out, std::uint32_t(u.rate_wpm));
    detail::put_u32(out, u.samples);
    detail::put_u32(out, std::uint32_t(u.phonemes.size()));
    detail::put_array(out, u.phonemes);
    detail::put_array(out, u.durations);
    detail::put_u32(out, std::uint32_t(u.frames(d.mel_bins)));
    detail::put_array(out, u.mel);
  }
  return out;
}

inline Dataset deserialize(const std::string& bytes) {
  detail::Reader in{bytes};
  in.need(8);
  if (bytes.compare(0, 8, "SLSPEECH") != 0) throw std::runtime_error("speech_data: not a speech_data cache file");
  in.at = 8;
  if (const auto version = in.u32(); version != 1)
    throw std::runtime_error("speech_data: cache version must be 1, got " + std::to_string(version));
  Dataset d;
  d.settings = in.string();
  d.mel_bins = int(in.u32());
  d.sample_rate = int(in.u32());
  for (auto n = in.u32(); n > 0; --n) d.inventory.push_back(in.string());
  d.mean = in.array<float>(std::size_t(d.mel_bins));
  d.stddev = in.array<float>(std::size_t(d.mel_bins));
  for (auto n = in.u32(); n > 0; --n) {
    Utterance u;
    in.need(1);
    u.split = Split(bytes[in.at++]);
    u.text = in.string();
    u.voice = in.string();
    u.rate_wpm = int(in.u32());
    u.samples = in.u32();
    const auto phonemes = in.u32();
    u.phonemes = in.array<std::uint32_t>(phonemes);
    u.durations = in.array<std::uint32_t>(phonemes);
    u.mel = in.array<float>(std::size_t(in.u32()) * std::size_t(d.mel_bins));
    d.utterances.push_back(std::move(u));
  }
  return d;
}

// FNV-1a of the settings text: the cache file's name, so changed settings never read a stale file.
inline std::string cache_path(const std::filesystem::path& dir, const Settings& s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s.describe()) h = (h ^ c) * 1099511628211ULL;
  char name[64];
  std::snprintf(name, sizeof name, "speech_data_%016llx.bin", static_cast<unsigned long long>(h));
  return (dir / name).string();
}

// The dataset of `s`, read from dir's cache file when its settings match, else built and written
// (to a temporary file renamed into place). `from_cache` says which.
inline Dataset load_or_build(const std::filesystem::path& dir, const Settings& s, bool* from_cache = nullptr,
                             const std::function<void(int, int)>& progress = {}) {
  const auto path = cache_path(dir, s);
  if (std::ifstream in{path, std::ios::binary}) {
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Dataset d = deserialize(bytes);
    if (d.settings == s.describe()) {
      if (from_cache) *from_cache = true;
      return d;
    }
  }
  Dataset d = build_dataset(s, progress);
  std::filesystem::create_directories(dir);
  const std::string bytes = serialize(d), temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    if (!out) throw std::runtime_error("speech_data: cannot write " + temporary);
  }
  std::filesystem::rename(temporary, path);
  if (from_cache) *from_cache = false;
  return d;
}

}  // namespace speech
