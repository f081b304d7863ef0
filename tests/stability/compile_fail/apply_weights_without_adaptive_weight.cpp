// Must not compile: a pipeline without AdaptiveWeight holds no multipliers to apply.
#include <steadyloss/steadyloss.hpp>
namespace sl = steadyloss;
auto loss = sl::compose(sl::term(sl::AdaptiveHuber<float>{}, 1.0f), sl::term(sl::L1<float>{}, 1.0f));
sl::Stabilizer<sl::ErrorScale<2, float>> guard;
void restore() { sl::apply_weights(loss, guard); }
