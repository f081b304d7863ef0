// steadyloss-replay: runs a Stabilizer over a training log you already have (CSV/TSV with a
// header; PyTorch Lightning's CSVLogger metrics.csv, Keras' CSVLogger, or your own), so patience,
// min_delta and spike detectors can be tuned offline on past runs. See tools/replay/README.md;
// the program is replay_cli.hpp's replay_main, which the tests run.
#include <iostream>
#include <string>
#include <vector>

#include "replay_cli.hpp"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  return steadyloss::replay::replay_main(args, std::cin, std::cout, std::cerr);
}
