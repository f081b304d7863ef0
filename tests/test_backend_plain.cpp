// backend/plain.hpp and the customization point: std containers, raw memory, and a user type
// adapted by specializing tensor_traits only.
#include <catch2/catch.hpp>

#include <array>
#include <cstddef>
#include <span>
#include <vector>

#include <steadyloss/steadyloss.hpp>

#include "reference.hpp"

namespace sl = steadyloss;

namespace user {
/// A tensor type from "someone else's" codebase: steadyloss knows nothing about it.
struct Buffer {
  std::vector<double> storage;
  std::size_t rows = 0, cols = 0;
};
}  // namespace user

template <>
struct steadyloss::tensor_traits<user::Buffer> {
  using value_type = double;
  static const double* data(const user::Buffer& b) { return b.storage.data(); }
  static std::size_t size(const user::Buffer& b) { return b.rows * b.cols; }
  static double* mutable_data(user::Buffer& b) { return b.storage.data(); }
};

static_assert(sl::Tensor<std::vector<float>> && sl::MutableTensor<std::vector<double>>);
static_assert(sl::Tensor<std::span<const float>> && !sl::MutableTensor<std::span<const float>>);
static_assert(sl::TensorView<std::span<float>> && !sl::TensorView<std::vector<float>>);
static_assert(sl::Tensor<std::array<double, 4>>);
static_assert(!sl::Tensor<std::vector<int>> && !sl::Tensor<int> && !sl::Tensor<float*>);
static_assert(sl::MutableTensor<user::Buffer>);

TEMPLATE_TEST_CASE("every plain-memory form gives the same result", "[backend][plain]", float, double) {
  using T = TestType;
  const auto pred = reference::uniform<T>(24, T(-3), T(3), 1);
  const auto target = reference::uniform<T>(24, T(-3), T(3), 2);
  std::array<T, 24> pred_array{}, target_array{};
  std::copy(pred.begin(), pred.end(), pred_array.begin());
  std::copy(target.begin(), target.end(), target_array.begin());
  const sl::Huber<T> term{};
  std::vector<T> g_vector(24), g_span(24), g_pointer(24);
  std::array<T, 24> g_array{};

  const T by_vector = sl::evaluate(term, sl::inputs(pred, target), g_vector).value;
  const T by_array = sl::evaluate(term, sl::inputs(pred_array, target_array), g_array).value;
  const T by_span = sl::evaluate(term, sl::inputs(std::span<const T>(pred), std::span<const T>(target)),
                                 std::span<T>(g_span)).value;
  const T by_pointer = sl::evaluate(term, sl::inputs(sl::view(pred.data(), 24), sl::view(target.data(), 24)),
                                    sl::view(g_pointer.data(), 24)).value;
  reference::real want = 0;
  for (std::size_t i = 0; i < 24; ++i) want += reference::huber(pred[i], target[i], 1);
  CHECK(by_vector == Approx(static_cast<double>(want / 24)).epsilon(reference::tolerance<T>()));
  CHECK(by_array == by_vector);
  CHECK(by_span == by_vector);
  CHECK(by_pointer == by_vector);
  for (std::size_t i = 0; i < 24; ++i) {
    REQUIRE(g_array[i] == g_vector[i]);
    REQUIRE(g_span[i] == g_vector[i]);
    REQUIRE(g_pointer[i] == g_vector[i]);
  }
}

TEST_CASE("a user type works through tensor_traits alone", "[backend][user]") {
  user::Buffer pred{reference::uniform<double>(12, -5, 5, 3), 3, 4};
  user::Buffer target{reference::bernoulli<double>(12, 0.3, 4), 3, 4};
  user::Buffer grad{std::vector<double>(12), 3, 4};
  const sl::BalancedBCE<double> term{.pos_weight = 5};
  const auto r = sl::evaluate(term, sl::inputs(pred, target), grad);
  reference::real want = 0;
  for (std::size_t i = 0; i < 12; ++i) want += reference::bce(pred.storage[i], target.storage[i], 5);
  CHECK(r.value == Approx(static_cast<double>(want / 12)).epsilon(1e-13));
  for (std::size_t i = 0; i < 12; ++i)
    CHECK(grad.storage[i] ==
          Approx(static_cast<double>(reference::bce_grad(pred.storage[i], target.storage[i], 5) / 12)));
}
