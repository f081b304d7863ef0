// core/evaluate.hpp: mean, sum, masked and length-weighted means, their gradients, float32
// accuracy at 16M elements, and the errors for bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <steadyloss/steadyloss.hpp>

#include "reference.hpp"

namespace sl = steadyloss;
using Catch::Matchers::Contains;

namespace {

template <class T>
struct batch {
  // A padded [batch = 3, frames = 7, features = 5] layout with lengths {7, 3, 0}.
  static constexpr std::size_t sequences = 3, frames = 7, features = 5, n = sequences * frames * features;
  std::vector<T> pred = reference::uniform<T>(n, T(-3), T(3), 11);
  std::vector<T> target = reference::uniform<T>(n, T(-3), T(3), 12);
  std::vector<int> lengths{7, 3, 0};
  std::vector<T> frame_mask = [this] {
    std::vector<T> m(sequences * frames, T(0));
    for (std::size_t b = 0; b < sequences; ++b)
      for (int t = 0; t < lengths[b]; ++t) m[b * frames + t] = T(1);
    return m;
  }();
  bool kept(std::size_t i) const { return frame_mask[i / features] != T(0); }
};

}  // namespace

TEMPLATE_TEST_CASE("mean and sum reductions and their gradients", "[reduction]", float, double) {
  using T = TestType;
  const std::size_t n = 1000;
  const auto pred = reference::uniform<T>(n, T(-3), T(3), 5);
  const auto target = reference::uniform<T>(n, T(-3), T(3), 6);
  std::vector<T> grad(n);
  const sl::Huber<T> term{.delta = T(1)};
  reference::real want_sum = 0;
  for (std::size_t i = 0; i < n; ++i) want_sum += reference::huber(pred[i], target[i], 1);

  const auto mean = sl::evaluate(term, sl::inputs(pred, target), grad);
  CHECK(mean.value == Approx(static_cast<double>(want_sum / n)).epsilon(reference::tolerance<T>()));
  CHECK(mean.denominator == n);
  for (std::size_t i = 0; i < n; ++i)
    REQUIRE(grad[i] == Approx(static_cast<double>(reference::huber_grad(pred[i], target[i], 1) / n)));

  const auto sum = sl::evaluate(term, sl::inputs(pred, target), grad, sl::reduction::sum);
  CHECK(sum.value == Approx(static_cast<double>(want_sum)).epsilon(reference::tolerance<T>()));
  CHECK(sum.denominator == 1);
  for (std::size_t i = 0; i < n; ++i)
    REQUIRE(grad[i] == Approx(static_cast<double>(reference::huber_grad(pred[i], target[i], 1))));

  CHECK(sl::value(term, sl::inputs(pred, target)).value == mean.value);  // value-only path agrees
}

TEST_CASE("the reduced gradient is the derivative of the reduced value", "[reduction]") {
  batch<double> b;
  std::vector<double> grad(b.n);
  const sl::Huber<double> term{.delta = 0.8};
  const auto in = sl::inputs(b.pred, b.target, sl::per_frame(b.frame_mask, b.features));
  sl::evaluate(term, in, grad);
  const double h = 1e-6;
  for (std::size_t i : {0u, 17u, 40u, 60u, 104u}) {
    std::vector<double> plus = b.pred, minus = b.pred;
    plus[i] += h;
    minus[i] -= h;
    const double numeric = (sl::value(term, sl::inputs(plus, b.target, sl::per_frame(b.frame_mask, b.features))).value -
                            sl::value(term, sl::inputs(minus, b.target, sl::per_frame(b.frame_mask, b.features))).value) / (2 * h);
    INFO("element " << i);
    CHECK(grad[i] == Approx(numeric).margin(1e-9));
  }
}

TEMPLATE_TEST_CASE("a frame mask and per-sequence lengths give the weighted mean", "[reduction]",
                   float, double) {
  using T = TestType;
  batch<T> b;
  const sl::Huber<T> term{};
  reference::real want = 0, count = 0;
  for (std::size_t i = 0; i < b.n; ++i)
    if (b.kept(i)) want += reference::huber(b.pred[i], b.target[i], 1), count += 1;
  want /= count;

  std::vector<T> grad_mask(b.n, T(7)), grad_lengths(b.n, T(7));
  const auto by_mask = sl::evaluate(term, sl::inputs(b.pred, b.target, sl::per_frame(b.frame_mask, b.features)), grad_mask);
  const auto by_lengths =
      sl::evaluate(term, sl::inputs(b.pred, b.target, sl::lengths(b.lengths, b.frames, b.features)), grad_lengths);
  CHECK(by_mask.value == Approx(static_cast<double>(want)).epsilon(reference::tolerance<T>()));
  CHECK(by_lengths.value == Approx(static_cast<double>(want)).epsilon(reference::tolerance<T>()));
  const std::vector<std::size_t> unsigned_lengths(b.lengths.begin(), b.lengths.end());
  CHECK(sl::value(term, sl::inputs(b.pred, b.target, sl::lengths(unsigned_lengths, b.frames, b.features))).value ==
        by_lengths.value);
  CHECK(by_mask.denominator == count);
  CHECK(by_lengths.denominator == count);
  for (std::size_t i = 0; i < b.n; ++i) {
    const double g = b.kept(i) ? static_cast<double>(reference::huber_grad(b.pred[i], b.target[i], 1) / count) : 0.0;
    INFO("element " << i);
    REQUIRE(grad_mask[i] == Approx(g));
    REQUIRE(grad_lengths[i] == Approx(g));
  }
}

TEMPLATE_TEST_CASE("per-element weights weight each element and padding may hold NaN", "[reduction]",
                   float, double) {
  using T = TestType;
  const std::size_t n = 300;
  auto pred = reference::uniform<T>(n, T(-8), T(8), 21);
  const auto target = reference::bernoulli<T>(n, 0.1, 22);
  auto weights = reference::uniform<T>(n, T(0), T(2), 23);
  for (std::size_t i = 0; i < n; i += 7) {
    weights[i] = T(0);
    pred[i] = std::numeric_limits<T>::quiet_NaN();  // masked out: must not leak into the result
  }
  const sl::BalancedBCE<T> term{.pos_weight = T(5)};
  reference::real sum = 0, weight_sum = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (weights[i] != 0) sum += weights[i] * reference::bce(pred[i], target[i], 5), weight_sum += weights[i];
  std::vector<T> grad(n);
  const auto mean = sl::evaluate(term, sl::inputs(pred, target, weights), grad);
  CHECK(mean.value == Approx(static_cast<double>(sum / weight_sum)).epsilon(reference::tolerance<T>()));
  for (std::size_t i = 0; i < n; ++i) {
    const double g = weights[i] == 0 ? 0.0
                                     : static_cast<double>(weights[i] * reference::bce_grad(pred[i], target[i], 5) / weight_sum);
    INFO("element " << i);
    REQUIRE(grad[i] == Approx(g).margin(1e-7));
  }
  const auto total = sl::value(term, sl::inputs(pred, target, weights), sl::reduction::sum);
  CHECK(total.value == Approx(static_cast<double>(sum)).epsilon(reference::tolerance<T>()));
}

TEST_CASE("float32 sums keep 1e-6 relative accuracy at 16M elements", "[reduction][accuracy]") {
  const std::size_t n = std::size_t(1) << 24;
  const auto pred = reference::uniform<float>(n, -2.0f, 2.0f, 31);
  const auto target = reference::uniform<float>(n, -2.0f, 2.0f, 32);
  std::vector<float> grad(n);
  const sl::Huber<float> term{};
  double want = 0;  // float64 reference from the same float inputs
  float naive = 0;  // what a plain float loop would report
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(pred[i]) - target[i], a = std::fabs(d);
    want += a <= 1 ? 0.5 * d * d : a - 0.5;
    naive += term.value(pred[i], target[i]);
  }
  const auto sum = sl::evaluate(term, sl::inputs(pred, target), grad, sl::reduction::sum);
  const double relative = std::fabs(sum.value - want) / want;
  INFO("relative error " << relative << ", naive float loop " << std::fabs(naive - want) / want);
  CHECK(relative < 1e-6);
  CHECK(std::fabs(naive - want) / want > 1e-4);  // the test has teeth: a naive sum fails it
  CHECK(sl::value(term, sl::inputs(pred, target)).value == Approx(want / n).epsilon(1e-6));
}

TEMPLATE_TEST_CASE("bad sizes and data are rejected before anything is written", "[reduction][errors]",
                   float, double) {
  using T = TestType;
  std::vector<T> pred(4096, T(0.5)), target(4095, T(0.5)), grad(4096, T(3)), same(4096, T(0.5));
  const sl::Huber<T> term{};
  CHECK_THROWS_AS(sl::value(term, sl::inputs(pred, target)), sl::shape_mismatch);
  CHECK_THROWS_WITH(sl::value(term, sl::inputs(pred, target)), Contains("pred has 4096 elements, target 4095"));
  std::vector<T> small(10);
  CHECK_THROWS_WITH(sl::evaluate(term, sl::inputs(pred, same), small), Contains("grad has 10 elements, pred 4096"));
  std::vector<T> empty;
  CHECK_THROWS_AS(sl::value(term, sl::inputs(empty, empty)), sl::invalid_input);
  CHECK_THROWS_WITH(sl::evaluate(term, sl::inputs(pred, same), pred), Contains("overlaps"));
  std::vector<T> no_storage;  // a gradient the caller forgot to size: an error, not "no gradient"
  CHECK_THROWS_WITH(sl::evaluate(term, sl::inputs(pred, same), no_storage), Contains("grad has 0 elements"));

  std::vector<T> mask(1000, T(1));
  CHECK_THROWS_AS(sl::evaluate(term, sl::inputs(pred, same, mask), grad), sl::shape_mismatch);
  CHECK_THROWS_WITH(sl::evaluate(term, sl::inputs(pred, same, mask), grad), Contains("mask has 1000 elements"));
  std::vector<T> zeros(1024, T(0));
  CHECK_THROWS_AS(sl::evaluate(term, sl::inputs(pred, same, sl::per_frame(zeros, 4)), grad), sl::invalid_input);
  CHECK_THROWS_WITH(sl::evaluate(term, sl::inputs(pred, same, sl::per_frame(zeros, 4)), grad), Contains("all zero"));
  std::vector<T> negative(1024, T(1));
  negative[9] = T(-1);
  CHECK_THROWS_WITH(sl::evaluate(term, sl::inputs(pred, same, sl::per_frame(negative, 4)), grad),
                    Contains("mask[9] = -1"));
  negative[9] = std::numeric_limits<T>::infinity();
  CHECK_THROWS_AS(sl::evaluate(term, sl::inputs(pred, same, sl::per_frame(negative, 4)), grad), sl::invalid_input);

  std::vector<T> shared(4096, T(1));  // the gradient written over the mask it reads
  CHECK_THROWS_WITH(sl::evaluate(term, sl::inputs(pred, same, shared), shared), Contains("overlaps the mask"));

  std::vector<std::int64_t> lengths{3, 5};
  CHECK_THROWS_WITH(sl::evaluate(term, sl::inputs(pred, same, sl::lengths(lengths, 3, 512)), grad),
                    Contains("pred has 4096 elements, but batch (2 lengths) x max_frames (3) x frame_size (512) = 3072"));
  CHECK_THROWS_WITH(sl::evaluate(term, sl::inputs(pred, same, sl::lengths(lengths, 4, 512)), grad), Contains("lengths[1] = 5"));
  lengths = {0, 0};
  CHECK_THROWS_AS(sl::evaluate(term, sl::inputs(pred, same, sl::lengths(lengths, 4, 512)), grad), sl::invalid_input);
  lengths = {-1, 2};
  CHECK_THROWS_AS(sl::evaluate(term, sl::inputs(pred, same, sl::lengths(lengths, 4, 512)), grad), sl::invalid_input);
  for (T g : grad) REQUIRE(g == T(3));  // nothing above wrote the gradient
}

TEMPLATE_TEST_CASE("size products that overflow size_t are shape errors, not crashes", "[reduction][errors]",
                   float, double) {
  // batch x max_frames x frame_size used to wrap around: a division by zero, or a frame size read
  // from the wrapped product and a heap over-read in the value-only path.
  using T = TestType;
  std::vector<T> pred(64, T(0.5)), grad(64, T(3));
  const std::vector<int> lengths{1, 1};
  const std::size_t huge = std::numeric_limits<std::size_t>::max() / 2 + 1;  // 2 x huge wraps to 0
  const sl::Huber<T> term{};
  CHECK_THROWS_AS(sl::value(term, sl::inputs(pred, pred, sl::lengths(lengths, huge, 1))), sl::shape_mismatch);
  CHECK_THROWS_WITH(sl::value(term, sl::inputs(pred, pred, sl::lengths(lengths, huge, 1))),
                    Contains("overflows size_t"));
  CHECK_THROWS_AS(sl::value(term, sl::inputs(pred, pred, sl::lengths(lengths, 2, huge))), sl::shape_mismatch);
  CHECK_THROWS_AS(sl::evaluate(term, sl::inputs(pred, pred, sl::lengths(lengths, huge + 16, 2)), grad),
                  sl::shape_mismatch);
  const std::vector<T> mask(2, T(1));
  CHECK_THROWS_WITH(sl::value(term, sl::inputs(pred, pred, sl::per_frame(mask, huge))), Contains("overflow size_t"));
  for (T g : grad) REQUIRE(g == T(3));
}

TEMPLATE_TEST_CASE("lengths or a mask for another batch size are shape errors naming both sizes",
                   "[reduction][errors]", float, double) {
  // 4 sequences x 5 frames x 3 features. Lengths for 2 sequences used to be read as frames of 6.
  using T = TestType;
  const std::size_t n = 4 * 5 * 3;
  const auto pred = reference::uniform<T>(n, T(-1), T(1), 41);
  const auto target = reference::uniform<T>(n, T(-1), T(1), 42);
  std::vector<T> grad(n, T(3));
  const sl::Huber<T> term{};
  const std::vector<int> two{5, 2};
  CHECK_THROWS_AS(sl::value(term, sl::inputs(pred, target, sl::lengths(two, 5, 3))), sl::shape_mismatch);
  CHECK_THROWS_WITH(sl::evaluate(term, sl::inputs(pred, target, sl::lengths(two, 5, 3)), grad),
                    Contains("pred has 60 elements") && Contains("batch (2 lengths)") && Contains("= 30"));
  const std::vector<int> four{5, 2, 0, 1};
  CHECK_NOTHROW(sl::value(term, sl::inputs(pred, target, sl::lengths(four, 5, 3))));

  // A mask of 10 weights over 60 elements: one per element unless stated per frame.
  const std::vector<T> half_mask(10, T(1));
  CHECK_THROWS_AS(sl::value(term, sl::inputs(pred, target, half_mask)), sl::shape_mismatch);
  CHECK_THROWS_WITH(sl::value(term, sl::inputs(pred, target, half_mask)),
                    Contains("mask has 10 elements, pred 60") && Contains("sl::per_frame(mask, 6)"));
  CHECK_THROWS_WITH(sl::evaluate(term, sl::inputs(pred, target, sl::per_frame(half_mask, 3)), grad),
                    Contains("pred has 60 elements") && Contains("10 frames x frame_size 3 cover 30"));
  const std::vector<T> frame_mask(20, T(1));
  CHECK(sl::value(term, sl::inputs(pred, target, sl::per_frame(frame_mask, 3))).value ==
        sl::value(term, sl::inputs(pred, target)).value);
  for (T g : grad) REQUIRE(g == T(3));
}

TEST_CASE("view() rejects a null pointer with a nonzero size", "[reduction][errors]") {
  const float* nothing = nullptr;
  CHECK_THROWS_AS(sl::view(nothing, 5), sl::invalid_input);
  CHECK_THROWS_WITH(sl::view(nothing, 5), Contains("null pointer with size 5"));
  double* writable = nullptr;
  CHECK_THROWS_AS(sl::view(writable, 1), sl::invalid_input);
  CHECK(sl::view(nothing, 0).empty());  // an empty view is fine (evaluate rejects it as empty input)
}

TEMPLATE_TEST_CASE("a reduction value that is neither mean nor sum is rejected", "[reduction][errors]", float,
                   double) {
  using T = TestType;
  std::vector<T> pred(8, T(1)), target(8, T(0)), grad(8, T(3));
  const auto bogus = static_cast<sl::reduction>(7);
  CHECK_THROWS_AS(sl::value(sl::L1<T>{}, sl::inputs(pred, target), bogus), sl::invalid_parameter);
  CHECK_THROWS_WITH(sl::evaluate(sl::L1<T>{}, sl::inputs(pred, target), grad, bogus),
                    Contains("reduction must be reduction::mean or reduction::sum, got 7"));
  CHECK_THROWS_AS(sl::compose(sl::term(sl::L1<T>{}, T(1), bogus)), sl::invalid_parameter);
  for (T g : grad) REQUIRE(g == T(3));
}

TEMPLATE_TEST_CASE("a normalizer or weight that does not fit in T is rejected, not turned into Inf gradients",
                   "[reduction][errors]", float, double) {
  using T = TestType;
  using limits = std::numeric_limits<T>;
  const std::size_t n = 64;
  const auto pred = reference::uniform<T>(n, T(-1), T(1), 51);
  const auto target = reference::uniform<T>(n, T(-1), T(1), 52);
  std::vector<T> grad(n, T(3));
  const sl::Huber<T> term{};
  // The smallest normal weights: sum(w) = 64 x min, so term weight 1e5 / sum(w) is above T's range,
  // and a per-element mask multiplies that factor (in T) by each weight.
  const std::vector<T> tiny(n, limits::min());
  auto heavy = sl::compose(sl::term(term, T(1e5)));
  CHECK_THROWS_AS(heavy.evaluate(sl::inputs(pred, target, tiny), sl::grads(grad)), sl::invalid_input);
  CHECK_THROWS_WITH(heavy.evaluate(sl::inputs(pred, target, tiny), sl::grads(grad)),
                    Contains("gradient scale, term weight 100000 x largest mask weight") &&
                        Contains("overflows the term's value_type"));
  for (T g : grad) REQUIRE(g == T(3));
  // The value alone needs no gradient scale; it is the weighted mean, here the plain mean.
  reference::real want = 0;
  for (std::size_t i = 0; i < n; ++i) want += reference::huber(pred[i], target[i], 1);
  CHECK(heavy.evaluate(sl::inputs(pred, target, tiny)).values[0] ==
        Approx(static_cast<double>(want / n)).epsilon(reference::tolerance<T>()));

  // A base weight times a multiplier that overflows T.
  const T big = std::sqrt(limits::max()) * T(4);
  auto loss = sl::compose(sl::term(term, big));
  const std::array<T, 1> large{big}, unit{T(1)};
  CHECK_THROWS_AS(loss.set_multipliers(large), sl::invalid_parameter);
  CHECK_THROWS_WITH(loss.set_multipliers(large), Contains("is not finite"));
  CHECK(loss.multipliers()[0] == T(1));  // the rejected multipliers were not kept
  loss.set_base_weights(unit);
  loss.set_multipliers(large);
  CHECK_THROWS_AS(loss.set_base_weights(large), sl::invalid_parameter);
  CHECK(loss.weights()[0] == big);
  CHECK(std::isfinite(loss.evaluate(sl::inputs(pred, target), sl::grads(grad)).total));
}

TEMPLATE_TEST_CASE("a subnormal mask weight is rejected, naming the element and the value",
                   "[reduction][errors]", float, double) {
  // w x loss is formed in T: with w = denorm_min it underflows to 0 for every loss below 1, and the
  // masked mean came out 0 instead of sum(w l) / sum(w).
  using T = TestType;
  using limits = std::numeric_limits<T>;
  const std::size_t n = 40;
  const auto pred = reference::uniform<T>(n, T(-1), T(1), 61);
  const auto target = reference::uniform<T>(n, T(-1), T(1), 62);
  std::vector<T> grad(n, T(3));
  const sl::Huber<T> term{};
  std::vector<T> mask(n, limits::denorm_min());
  CHECK_THROWS_AS(sl::value(term, sl::inputs(pred, target, mask)), sl::invalid_input);
  CHECK_THROWS_WITH(sl::value(term, sl::inputs(pred, target, mask)),
                    Contains("mask[0] = ") && Contains("is subnormal"));
  std::fill(mask.begin(), mask.end(), T(1));
  mask[3] = limits::min() / T(2);
  CHECK_THROWS_WITH(sl::evaluate(term, sl::inputs(pred, target, mask), grad), Contains("mask[3] = ") &&
                        Contains(sl::detail::message(limits::min() / T(2))) && Contains("subnormal"));
  const std::vector<T> frames{T(1), limits::denorm_min() * T(8), T(0), T(1)};
  CHECK_THROWS_WITH(sl::evaluate(term, sl::inputs(pred, target, sl::per_frame(frames, 10)), grad),
                    Contains("mask[1] = ") && Contains("subnormal"));
  CHECK_THROWS_AS(sl::value(term, sl::inputs(pred, target, sl::per_frame(frames, 10)), sl::reduction::sum),
                  sl::invalid_input);
  for (T g : grad) REQUIRE(g == T(3));
}

TEMPLATE_TEST_CASE("the smallest normal mask weights give the weighted mean and its gradient", "[reduction]",
                   float, double) {
  // The boundary of the rule above: weights of 1, 2 and 3 x the smallest normal T, against a long
  // double reference. |d| in [1, 3] keeps each w x loss normal.
  using T = TestType;
  using limits = std::numeric_limits<T>;
  const std::size_t n = 60;
  const auto target = reference::uniform<T>(n, T(-1), T(1), 71);
  auto pred = reference::uniform<T>(n, T(1), T(3), 72);
  for (std::size_t i = 0; i < n; i += 2) pred[i] = target[i] - pred[i];
  for (std::size_t i = 1; i < n; i += 2) pred[i] = target[i] + pred[i];
  std::vector<T> mask(n), grad(n, T(3));
  for (std::size_t i = 0; i < n; ++i) mask[i] = limits::min() * T(i % 4);  // 0, 1, 2, 3 x min
  reference::real weighted = 0, weight_sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const reference::real w = static_cast<reference::real>(mask[i]);
    weighted += w * std::abs(static_cast<reference::real>(pred[i]) - target[i]);
    weight_sum += w;
  }
  const auto r = sl::evaluate(sl::L1<T>{}, sl::inputs(pred, target, mask), grad);
  CHECK(r.value == Approx(static_cast<double>(weighted / weight_sum)).epsilon(reference::tolerance<T>()));
  CHECK(r.value > 1);
  for (std::size_t i = 0; i < n; ++i) {
    const reference::real sign = pred[i] > target[i] ? 1 : -1;
    REQUIRE(grad[i] == Approx(static_cast<double>(sign * mask[i] / weight_sum)).epsilon(reference::tolerance<T>()));
  }
}

TEMPLATE_TEST_CASE("the gradient scale rejects overflow only", "[reduction][errors]", float, double) {
  using T = TestType;
  using limits = std::numeric_limits<T>;
  // batch<T>: 3 sequences x 7 frames x 5 features, 10 valid frames.
  batch<T> b;
  std::vector<T> grad(b.n, T(3));
  const sl::Huber<T> term{};
  auto huber_grad = [&](std::size_t i) {
    return reference::huber_grad(b.pred[i], b.target[i], 1);
  };

  SECTION("a term weight whose gradient underflows toward 0 is accepted, as is weight 0") {
    // 1e-44 in float (a subnormal) or 1e-320 in double: weight / n underflows, which is no error.
    const T small = std::is_same_v<T, float> ? T(1e-44) : T(1e-320);
    for (const T weight : {small, T(0)}) {
      auto loss = sl::compose(sl::term(term, weight));
      const auto r = loss.evaluate(sl::inputs(b.pred, b.target), sl::grads(grad));
      CHECK(r.values[0] == sl::value(term, sl::inputs(b.pred, b.target)).value);
      for (std::size_t i = 0; i < b.n; ++i)
        REQUIRE(grad[i] == Approx(static_cast<double>(weight * huber_grad(i) / b.n))
                               .margin(2 * static_cast<double>(limits::denorm_min())));
      if (weight == T(0))
        for (T g : grad) REQUIRE(g == T(0));
    }
  }

  SECTION("a per-frame mask folds its weight in double: tiny weights under a large term weight fit") {
    // 1e5 / (10 frames x 5 x min) is above T's range, but each frame's factor is
    // 1e5 x w / (sum(w) x 5) = 1e5 / 50.
    std::vector<T> frames(b.frame_mask);
    for (T& w : frames) w *= limits::min();
    auto loss = sl::compose(sl::term(term, T(1e5)));
    const auto r = loss.evaluate(sl::inputs(b.pred, b.target, sl::per_frame(frames, b.features)), sl::grads(grad));
    reference::real want = 0;
    for (std::size_t i = 0; i < b.n; ++i)
      if (b.kept(i)) want += reference::huber(b.pred[i], b.target[i], 1);
    CHECK(r.values[0] == Approx(static_cast<double>(want / 50)).epsilon(reference::tolerance<T>()));
    for (std::size_t i = 0; i < b.n; ++i)
      REQUIRE(grad[i] == Approx(b.kept(i) ? static_cast<double>(huber_grad(i) * 1e5L / 50) : 0.0)
                             .epsilon(reference::tolerance<T>()));
    // The same weights per element: the factor 1e5 / sum(w), formed in T, overflows.
    std::vector<T> elements(b.n);
    for (std::size_t i = 0; i < b.n; ++i) elements[i] = frames[i / b.features];
    std::fill(grad.begin(), grad.end(), T(3));
    CHECK_THROWS_WITH(loss.evaluate(sl::inputs(b.pred, b.target, elements), sl::grads(grad)),
                      Contains("evaluate: the gradient scale") && Contains("overflows"));
    for (T g : grad) REQUIRE(g == T(3));
  }

  SECTION("a large weight under a sum overflows the gradient: rejected, before anything is written") {
    // Term weight x mask weight = 1e40 (float) or 1e310 (double): the gradient would be Inf (NaN where
    // the loss' gradient is 0).
    const T mask_weight = std::is_same_v<T, float> ? T(1e30) : T(1e300);
    auto loss = sl::compose(sl::term(term, T(1e10), sl::reduction::sum));
    std::vector<T> elements(b.n, T(0)), frames(b.frame_mask);
    elements[7] = mask_weight;
    frames[2] = mask_weight;
    CHECK_THROWS_AS(loss.evaluate(sl::inputs(b.pred, b.target, elements), sl::grads(grad)), sl::invalid_input);
    CHECK_THROWS_WITH(loss.evaluate(sl::inputs(b.pred, b.target, sl::per_frame(frames, b.features)), sl::grads(grad)),
                      Contains("gradient scale, term weight 1e+10 x largest mask weight") && Contains("overflows"));
    for (T g : grad) REQUIRE(g == T(3));
    // The value alone forms no gradient factor.
    CHECK_NOTHROW(loss.evaluate(sl::inputs(b.pred, b.target, elements)));
  }
}

TEST_CASE("a float sum beyond float's range is +Inf, not an out-of-range conversion", "[reduction]") {
  // Each sequence's pass stays below FLT_MAX; their double total (4e38) does not.
  const std::vector<float> pred{1e19f, 0, 1e19f, 0, 1e19f, 0, 1e19f, 0}, target(8, 0.0f);
  const std::vector<int> lengths{1, 1, 1, 1};
  const auto r = sl::value(sl::MSE<float>{}, sl::inputs(pred, target, sl::lengths(lengths, 2, 1)), sl::reduction::sum);
  CHECK(r.value == std::numeric_limits<float>::infinity());
  CHECK(sl::detail::to_value_type<float>(-4e38) == -std::numeric_limits<float>::infinity());
  CHECK(sl::detail::to_value_type<float>(3e38) == 3e38f);
  CHECK(sl::detail::to_value_type<double>(4e38) == 4e38);
}

TEST_CASE("check_mask_shape names each caller's own fix", "[reduction][errors]") {
  using sl::detail::check_mask_shape;
  CHECK_THROWS_WITH(check_mask_shape(10, 1, 60, "evaluate"), Contains("write sl::per_frame(mask, 6)"));
  CHECK_THROWS_WITH(check_mask_shape(10, 1, 60, "cuda::launch_term", sl::detail::term_weighting_fix),
                    Contains("cuda::launch_term: mask has 10 elements, pred 60") &&
                        Contains("set term_weighting::frame_size = 6") && !Contains("per_frame"));
  CHECK_THROWS_WITH(check_mask_shape(7, 1, 60, "cuda::launch_term", sl::detail::term_weighting_fix),
                    Contains("(or per frame: term_weighting::frame_size)") && !Contains("per_frame"));
  CHECK_THROWS_WITH(check_mask_shape(7, 1, 60, "evaluate"), Contains("(or per frame: sl::per_frame(mask, frame_size))"));
}

TEMPLATE_TEST_CASE("an all-zero mask or all-zero lengths with sum is an empty batch", "[reduction]", float,
                   double) {
  using T = TestType;
  batch<T> b;
  std::vector<T> grad(b.n, T(3));
  const sl::Huber<T> term{};
  const std::vector<T> zeros(b.n, T(0)), frame_zeros(b.sequences * b.frames, T(0));
  const std::vector<int> no_lengths{0, 0, 0};
  const auto by_mask = sl::evaluate(term, sl::inputs(b.pred, b.target, zeros), grad, sl::reduction::sum);
  CHECK(by_mask.value == T(0));
  for (T g : grad) REQUIRE(g == T(0));
  std::fill(grad.begin(), grad.end(), T(3));
  const auto by_frames =
      sl::evaluate(term, sl::inputs(b.pred, b.target, sl::per_frame(frame_zeros, b.features)), grad, sl::reduction::sum);
  CHECK(by_frames.value == T(0));
  for (T g : grad) REQUIRE(g == T(0));
  std::fill(grad.begin(), grad.end(), T(3));
  const auto by_lengths = sl::evaluate(term, sl::inputs(b.pred, b.target, sl::lengths(no_lengths, b.frames, b.features)),
                                       grad, sl::reduction::sum);
  CHECK(by_lengths.value == T(0));
  for (T g : grad) REQUIRE(g == T(0));
  // A mean of nothing stays an error.
  CHECK_THROWS_WITH(sl::value(term, sl::inputs(b.pred, b.target, zeros)), Contains("all zero"));
  CHECK_THROWS_WITH(sl::value(term, sl::inputs(b.pred, b.target, sl::lengths(no_lengths, b.frames, b.features))),
                    Contains("every sequence length is 0"));
}
