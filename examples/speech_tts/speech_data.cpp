// speech_data: makes (or reads from its cache) the speech_tts example's data set and prints a
// summary per split. Usage: speech_data [--out DIR] [--train N] [--validation N] [--test N]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "speech_data.hpp"

int main(int argc, char** argv) {
  speech::Settings settings;
  std::string out = "speech_data";
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--out") && has_value) out = argv[++i];
    else if (!std::strcmp(argv[i], "--train") && has_value) settings.train = std::stoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--validation") && has_value) settings.validation = std::stoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--test") && has_value) settings.test = std::stoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: speech_data [--out DIR] [--train N] [--validation N] [--test N]\n");
      return 2;
    }
  }
  const auto start = std::chrono::steady_clock::now();
  bool from_cache = false;
  const auto data = speech::load_or_build(out, settings, &from_cache, [](int done, int total) {
    std::fprintf(stderr, "\rsynthesizing %d/%d", done, total);
    if (done == total) std::fprintf(stderr, "\n");
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %s in %.1f s\n", speech::cache_path(out, settings).c_str(),
              from_cache ? "read from the cache" : "synthesized and written", seconds);
  std::printf("%-10s %10s %8s %9s %9s\n", "split", "utterances", "frames", "phonemes", "audio_s");
  for (auto split : {speech::Split::train, speech::Split::validation, speech::Split::test}) {
    long utterances = 0, frames = 0, phonemes = 0;
    double audio = 0;
    for (const auto& u : data.utterances)
      if (u.split == split) {
        ++utterances;
        frames += u.frames(data.mel_bins);
        phonemes += long(u.phonemes.size());
        audio += double(u.samples) / data.sample_rate;
      }
    std::printf("%-10s %10ld %8ld %9ld %9.1f\n", speech::split_name(split), utterances, frames, phonemes, audio);
  }
  std::printf("phoneme inventory: %zu (with <pad>)\n", data.inventory.size());
}
