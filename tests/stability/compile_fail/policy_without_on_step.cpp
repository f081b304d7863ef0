// Must not compile: a type with state but no on_step(step_context<N>&) is not a step policy.
#include <steadyloss/stability/stability.hpp>
struct only_state {
  void save(steadyloss::state_writer&) const {}
  void load(steadyloss::state_reader&) {}
};
steadyloss::Stabilizer<steadyloss::EmaSmoother<>, only_state> guard;
