// cpu_isa.hpp: every kernel variant this CPU runs (the build's flags, AVX2, AVX-512) gives the
// reference values and gradients, and limit_cpu_isa really switches between them.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include <steadyloss/cpu_isa.hpp>
#include <steadyloss/steadyloss.hpp>

#include "reference.hpp"

namespace sl = steadyloss;

namespace {

std::vector<sl::cpu_isa> runnable_variants() {
  std::vector<sl::cpu_isa> out;
  for (const auto isa : {sl::cpu_isa::baseline, sl::cpu_isa::avx2, sl::cpu_isa::avx512})
    if (isa <= sl::detected_cpu_isa() && isa >= sl::build_cpu_isa) out.push_back(isa);
  return out;
}

}  // namespace

TEST_CASE("limit_cpu_isa caps the variant, never below the build's or above the CPU's", "[isa]") {
  CHECK(sl::active_cpu_isa() == sl::detected_cpu_isa());
  CHECK(sl::detected_cpu_isa() >= sl::build_cpu_isa);
  {
    const sl::scoped_cpu_isa_limit cap(sl::cpu_isa::baseline);
    CHECK(sl::active_cpu_isa() == sl::build_cpu_isa);
  }
  {
    const sl::scoped_cpu_isa_limit cap(sl::cpu_isa::avx2);
    CHECK(sl::active_cpu_isa() == std::max(sl::build_cpu_isa, std::min(sl::cpu_isa::avx2, sl::detected_cpu_isa())));
  }
  CHECK(sl::active_cpu_isa() == sl::detected_cpu_isa());
  CHECK(std::string(sl::to_string(sl::cpu_isa::avx512)) == "avx512");
  WARN("this CPU runs the " << sl::to_string(sl::detected_cpu_isa()) << " kernels; the build's flags give "
                            << sl::to_string(sl::build_cpu_isa));
}

TEMPLATE_TEST_CASE("Every ISA variant matches the long-double reference, masked or not", "[isa]", float, double) {
  using T = TestType;
  const std::size_t n = 4099;  // full blocks, a partial block of rows and a scalar remainder
  const auto pred = reference::uniform<T>(n, T(-8), T(8), 11);
  const auto target = reference::uniform<T>(n, T(-3), T(3), 12);
  const auto labels = reference::bernoulli<T>(n, 0.2, 13);
  std::vector<T> mask(n, T(1));
  for (std::size_t i = 0; i < n; i += 5) mask[i] = T(0);
  const T delta = T(1.5), pos_weight = T(5), eps = T(0.05);

  reference::real huber_sum = 0, bce_sum = 0, mask_sum = 0;
  std::vector<reference::real> huber_grad(n), bce_grad(n);
  for (std::size_t i = 0; i < n; ++i) {
    huber_sum += mask[i] * reference::huber(pred[i], target[i], delta);
    const reference::real y = reference::smooth(labels[i], eps);
    bce_sum += reference::bce(pred[i], y, pos_weight);
    mask_sum += mask[i];
    huber_grad[i] = mask[i] * reference::huber_grad(pred[i], target[i], delta);
    bce_grad[i] = reference::bce_grad(pred[i], y, pos_weight);
  }
  const double tolerance = 20 * reference::tolerance<T>();

  std::vector<T> first_huber_grad;
  for (const auto isa : runnable_variants()) {
    const sl::scoped_cpu_isa_limit cap(isa);
    INFO("variant " << sl::to_string(isa) << ", active " << sl::to_string(sl::active_cpu_isa()));
    REQUIRE(sl::active_cpu_isa() == isa);
    std::vector<T> g(n);
    const auto h = sl::evaluate(sl::Huber<T>{.delta = delta}, sl::inputs(pred, target, mask), g);
    CHECK(h.value == Approx(double(huber_sum / mask_sum)).epsilon(tolerance));
    int bad = 0;
    for (std::size_t i = 0; i < n; ++i)
      bad += !(std::fabs(double(g[i]) - double(huber_grad[i] / mask_sum)) <= tolerance / double(mask_sum));
    CHECK(bad == 0);
    if (first_huber_grad.empty()) first_huber_grad = g;
    else CHECK(g == first_huber_grad);  // Huber's gradient is one multiply: the same bits everywhere

    const sl::LabelSmoothing bce{sl::BalancedBCE<T>{.pos_weight = pos_weight}, eps};
    const auto b = sl::evaluate(bce, sl::inputs(pred, labels), g);
    CHECK(b.value == Approx(double(bce_sum / n)).epsilon(tolerance));
    bad = 0;
    for (std::size_t i = 0; i < n; ++i)
      bad += !(std::fabs(double(g[i]) - double(bce_grad[i] / n)) <= 4 * tolerance * (1 + std::fabs(double(bce_grad[i]))) / n);
    CHECK(bad == 0);
  }
}

namespace {

/// A copy of `data` starting `offset` elements past a 64-byte boundary.
template <class T>
struct placed_copy {
  std::vector<T> storage;
  std::span<T> view;
  placed_copy(const std::vector<T>& data, std::size_t offset) : storage(data.size() + 64 + offset) {
    std::size_t start = 0;
    while (reinterpret_cast<std::uintptr_t>(storage.data() + start) % 64 != 0) ++start;
    view = std::span<T>(storage.data() + start + offset, data.size());
    std::copy(data.begin(), data.end(), view.begin());
  }
};

}  // namespace

TEMPLATE_TEST_CASE("A result does not depend on where the buffers sit: offset views give the same bits", "[isa]",
                   float, double) {
  // Which elements share a vector and a partial sum depends on their index only, never on the
  // buffer's address: a checkpointed run resumed in another process (other allocations) computes
  // the same bits. (A pass that peeled elements up to a 64-byte boundary would break this: its
  // value's rounding and, with FMA, BCE's gradient would move with the address.)
  using T = TestType;
  const std::size_t n = 5003;
  const auto pred = reference::uniform<T>(n, T(-8), T(8), 31);
  const auto target = reference::uniform<T>(n, T(-3), T(3), 32);
  const auto labels = reference::bernoulli<T>(n, 0.2, 33);
  auto mask = reference::uniform<T>(n, T(0), T(2), 34);
  for (std::size_t i = 0; i < n; i += 5) mask[i] = T(0);
  const sl::Huber<T> huber{.delta = T(1.5)};
  const sl::LabelSmoothing bce{sl::BalancedBCE<T>{.pos_weight = T(5)}, T(0.05)};

  for (const auto isa : runnable_variants()) {
    const sl::scoped_cpu_isa_limit cap(isa);
    const placed_copy<T> p0(pred, 0), t0(target, 0), l0(labels, 0), m0(mask, 0);
    placed_copy<T> g0(std::vector<T>(n), 0);
    const auto huber_aligned = sl::evaluate(huber, sl::inputs(p0.view, t0.view, m0.view), g0.view);
    const std::vector<T> huber_grad(g0.view.begin(), g0.view.end());
    const auto bce_aligned = sl::evaluate(bce, sl::inputs(p0.view, l0.view), g0.view);
    const std::vector<T> bce_grad(g0.view.begin(), g0.view.end());
    const auto value_aligned = sl::value(bce, sl::inputs(p0.view, l0.view));
    for (const std::size_t offset : {std::size_t(1), std::size_t(3), 8 / sizeof(T) + 1}) {
      for (const std::size_t grad_offset : {offset, std::size_t(0)}) {
        INFO("variant " << sl::to_string(isa) << ", inputs " << offset << " and gradient " << grad_offset
                        << " elements past a 64-byte boundary");
        const placed_copy<T> p(pred, offset), t(target, offset), l(labels, offset), m(mask, offset);
        placed_copy<T> g(std::vector<T>(n), grad_offset);
        CHECK(sl::evaluate(huber, sl::inputs(p.view, t.view, m.view), g.view).value == huber_aligned.value);
        CHECK(std::equal(g.view.begin(), g.view.end(), huber_grad.begin()));
        CHECK(sl::evaluate(bce, sl::inputs(p.view, l.view), g.view).value == bce_aligned.value);
        CHECK(std::equal(g.view.begin(), g.view.end(), bce_grad.begin()));
        CHECK(sl::value(bce, sl::inputs(p.view, l.view)).value == value_aligned.value);
      }
    }
  }
}
