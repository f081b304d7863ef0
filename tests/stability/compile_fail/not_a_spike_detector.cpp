// Must not compile: a detector without limit() is not a SpikeDetector; SpikeDampener says what one needs.
#include <steadyloss/stability/stability.hpp>
struct no_limit {
  struct config {};
  static constexpr std::string_view name = "no_limit";
  no_limit(const config&, std::size_t, std::size_t) {}
  bool ready() const { return true; }
  double reference() const { return 0; }
  void accept(double) {}
  void clear() {}
  void save(steadyloss::state_writer&) const {}
  void load(steadyloss::state_reader&) {}
};
steadyloss::SpikeDampener<double, no_limit> spikes;
