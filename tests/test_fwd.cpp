// fwd.hpp alone: a user's header can name every public template with its defaults, without the
// definitions. The definitions include the same declarations (and repeat no default), so these
// are the defaults the library uses; the other test files include the definitions and would not
// compile if a declaration disagreed with its definition.
#include <steadyloss/fwd.hpp>  // first and alone: nothing else is needed below

#include <type_traits>

namespace sl = steadyloss;

namespace user_header {
// What a user's header writes: pointers and references to library types, no definitions.
struct trainer {
  sl::Huber<>* mel_term = nullptr;
  const sl::EmaSmoother<>* smoother = nullptr;
  sl::Stabilizer<sl::EmaSmoother<>, sl::EarlyStopper<>>* guard = nullptr;
  sl::validation_stopper<>* stopper = nullptr;
  sl::parallel_executor* pool = nullptr;
};
void train(trainer&, const sl::term_inputs<float>&, sl::reduction);
}  // namespace user_header

static_assert(std::is_same_v<sl::Huber<>, sl::Huber<float>>);
static_assert(std::is_same_v<sl::AdaptiveHuber<>, sl::AdaptiveHuber<float>>);
static_assert(std::is_same_v<sl::BalancedBCE<>, sl::BalancedBCE<float>>);
static_assert(std::is_same_v<sl::L1<>, sl::L1<float>>);
static_assert(std::is_same_v<sl::MSE<>, sl::MSE<float>>);
static_assert(std::is_same_v<sl::EmaSmoother<>, sl::EmaSmoother<float>>);
static_assert(std::is_same_v<sl::SpikeDampener<>, sl::SpikeDampener<float, sl::detect::mean_ratio>>);
static_assert(std::is_same_v<sl::spike_config<>, sl::spike_config<sl::detect::mean_ratio>>);
static_assert(std::is_same_v<sl::AdaptiveWeight<2>, sl::AdaptiveWeight<2, float>>);
static_assert(std::is_same_v<sl::ErrorScale<2>, sl::ErrorScale<2, float>>);
static_assert(std::is_same_v<sl::EarlyStopper<>, sl::EarlyStopper<float, sl::monitor::automatic>>);
static_assert(std::is_same_v<sl::StabilityMetrics<>, sl::StabilityMetrics<float>>);
static_assert(std::is_same_v<sl::Stabilizer<sl::EmaSmoother<>>, sl::BasicStabilizer<sl::local_reducer, sl::EmaSmoother<float>>>);
static_assert(std::is_same_v<sl::validation_stopper<>, sl::basic_validation_stopper<float, sl::local_reducer>>);
static_assert(std::is_same_v<sl::term_inputs<double>, sl::term_inputs<double, sl::unweighted>>);
static_assert(std::is_same_v<sl::tensor_traits<int>, sl::tensor_traits<int, void>>);
