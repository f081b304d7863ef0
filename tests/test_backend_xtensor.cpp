// The xtensor backend (steadyloss/backend/xtensor.hpp): every admitted xtensor container and
// adaptor gives the values and gradients of an independent long double reference worked straight
// from the closed forms in the README's semantics table; strides that only run time can see are refused.
// What is rejected at compile time is proved by tests/compile_fail/xtensor_expression.cpp.

#include <steadyloss/backend/xtensor.hpp>
#include <steadyloss/steadyloss.hpp>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xfixed.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include <catch2/catch.hpp>

#include "backend_reference.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace sl = steadyloss;

namespace {

using namespace backend_reference;

constexpr std::size_t rows = 6, cols = 5, n = rows * cols;

/// An xtensor container of type C with the given shape whose memory holds `values` in order
/// (a memory copy, not a logical one: a column-major C gets the same bytes as a row-major one).
template <class C, class T, class Shape>
C memory_copy(const std::vector<T>& values, const Shape& shape) {
  C container = C::from_shape(shape);
  REQUIRE(container.size() == values.size());
  std::copy(values.begin(), values.end(), container.data());
  return container;
}


}  // namespace

// ---------------------------------------------------------------------------------------------
// What the traits say about each xtensor type (the compile-time half of the contract)

using shape2 = std::array<std::size_t, 2>;
using dynamic_shape = std::vector<std::size_t>;
using row_adaptor = decltype(xt::adapt(std::declval<float*>(), std::size_t{}, xt::no_ownership(), dynamic_shape{}));
using const_adaptor = decltype(xt::adapt(std::declval<const float*>(), std::size_t{}, xt::no_ownership(), shape2{}));
using vector_adaptor = decltype(xt::adapt(std::declval<std::vector<double>&>(), dynamic_shape{}));
using moved_vector_adaptor = decltype(xt::adapt(std::declval<std::vector<double>&&>(), dynamic_shape{}));
using owning_adaptor = decltype(xt::adapt(std::declval<float*>(), std::size_t{}, xt::acquire_ownership(), dynamic_shape{}));

static_assert(sl::Tensor<xt::xarray<float>> && sl::Tensor<xt::xtensor<double, 3>> &&
              sl::Tensor<xt::xtensor_fixed<float, xt::xshape<2, 3>>>);
static_assert(sl::MutableTensor<xt::xarray<float>&> && !sl::TensorView<xt::xarray<float>>,
              "an owning container is writable and must be named (a temporary would dangle)");
static_assert(sl::TensorView<row_adaptor> && sl::MutableTensor<row_adaptor>);
static_assert(sl::TensorView<const_adaptor> && !sl::MutableTensor<const_adaptor>,
              "an adaptor over a const pointer reads only");
static_assert(sl::TensorView<vector_adaptor> && sl::MutableTensor<vector_adaptor>);
static_assert(sl::Tensor<moved_vector_adaptor> && !sl::TensorView<moved_vector_adaptor>,
              "an adaptor that holds the moved-in vector owns it");
static_assert(sl::Tensor<owning_adaptor> && !sl::TensorView<owning_adaptor>,
              "an adaptor that acquired ownership frees the buffer when it dies");
using fixed_adaptor = decltype(xt::adapt(std::declval<double*>(), xt::xshape<2, 3>{}));
static_assert(sl::TensorView<fixed_adaptor> && sl::MutableTensor<fixed_adaptor>);
static_assert(std::is_same_v<sl::tensor_value_t<const_adaptor>, float> &&
              std::is_same_v<sl::tensor_value_t<xt::xtensor<double, 1>>, double>);

// ---------------------------------------------------------------------------------------------
// Owning containers

TEMPLATE_TEST_CASE("xtensor: containers match the closed forms", "[xtensor]", float, double) {
  using T = TestType;
  const fixture<T> fx(n);
  const dynamic_shape shape{rows, cols};
  const shape2 fixed_shape{rows, cols};

  SECTION("row-major xarray") {
    using array = xt::xarray<T>;
    const auto pred = memory_copy<array>(fx.pred, shape), regression = memory_copy<array>(fx.regression_target, shape),
               binary = memory_copy<array>(fx.binary_target, shape);
    array grad = array::from_shape(shape);
    check_all_terms(pred, regression, binary, grad, grad.data(), fx);
  }
  SECTION("column-major xarray") {
    using array = xt::xarray<T, xt::layout_type::column_major>;
    const auto pred = memory_copy<array>(fx.pred, shape), regression = memory_copy<array>(fx.regression_target, shape),
               binary = memory_copy<array>(fx.binary_target, shape);
    array grad = array::from_shape(shape);
    check_all_terms(pred, regression, binary, grad, grad.data(), fx);
  }
  SECTION("xtensor<T, 2>, row- and column-major") {
    using row_tensor = xt::xtensor<T, 2>;
    using column_tensor = xt::xtensor<T, 2, xt::layout_type::column_major>;
    const auto pred = memory_copy<row_tensor>(fx.pred, fixed_shape);
    const auto regression = memory_copy<column_tensor>(fx.regression_target, fixed_shape);
    const auto binary = memory_copy<row_tensor>(fx.binary_target, fixed_shape);
    column_tensor grad = column_tensor::from_shape(fixed_shape);
    check_all_terms(pred, regression, binary, grad, grad.data(), fx);
  }
  SECTION("xtensor_fixed") {
    using fixed = xt::xtensor_fixed<T, xt::xshape<rows, cols>>;
    fixed pred, regression, binary, grad;
    std::copy(fx.pred.begin(), fx.pred.end(), pred.data());
    std::copy(fx.regression_target.begin(), fx.regression_target.end(), regression.data());
    std::copy(fx.binary_target.begin(), fx.binary_target.end(), binary.data());
    check_all_terms(std::as_const(pred), std::as_const(regression), std::as_const(binary), grad, grad.data(), fx);
  }
  SECTION("dynamic-layout xarray, one row-major and one column-major") {
    using array = xt::xarray<T, xt::layout_type::dynamic>;
    array pred(shape, xt::layout_type::column_major), regression(shape, xt::layout_type::row_major),
        binary(shape, xt::layout_type::column_major), grad(shape, xt::layout_type::row_major);
    std::copy(fx.pred.begin(), fx.pred.end(), pred.data());
    std::copy(fx.regression_target.begin(), fx.regression_target.end(), regression.data());
    std::copy(fx.binary_target.begin(), fx.binary_target.end(), binary.data());
    check_all_terms(std::as_const(pred), std::as_const(regression), std::as_const(binary), grad, grad.data(), fx);
  }
}

// ---------------------------------------------------------------------------------------------
// Adaptors

TEMPLATE_TEST_CASE("xtensor: adaptors match the closed forms", "[xtensor]", float, double) {
  using T = TestType;
  fixture<T> fx(n);
  const dynamic_shape shape{rows, cols};
  const shape2 fixed_shape{rows, cols};

  SECTION("adapt(pointer, size, no_ownership, shape) over const and mutable storage") {
    const T* pred_data = fx.pred.data();
    const auto pred = xt::adapt(pred_data, n, xt::no_ownership(), shape);
    const auto regression = xt::adapt(fx.regression_target.data(), n, xt::no_ownership(), fixed_shape);
    const auto binary =
        xt::adapt<xt::layout_type::column_major>(fx.binary_target.data(), n, xt::no_ownership(), shape);
    auto grad = xt::adapt(fx.grad.data(), n, xt::no_ownership(), fixed_shape);
    check_all_terms(pred, regression, binary, grad, fx.grad.data(), fx);
  }
  SECTION("adapt(std::vector&, shape) and adapt(std::vector&)") {
    auto pred = xt::adapt(fx.pred, shape);
    auto regression = xt::adapt(fx.regression_target, fixed_shape);
    auto binary = xt::adapt(fx.binary_target);
    auto grad = xt::adapt(fx.grad, shape);
    check_all_terms(pred, regression, binary, grad, fx.grad.data(), fx);
  }
  SECTION("adapt(pointer, shape)") {
    // xtensor 0.24 finds adapt(pointer, shape) ambiguous for an lvalue pointer: pass a prvalue.
    const auto pred = xt::adapt(fx.pred.data(), shape);
    const auto regression = xt::adapt(fx.regression_target.data(), shape);
    const auto binary = xt::adapt(fx.binary_target.data(), shape);
    auto grad = xt::adapt(fx.grad.data(), shape);
    check_all_terms(pred, regression, binary, grad, fx.grad.data(), fx);
  }
  SECTION("adapt with explicit dense strides, including a permuted layout") {
    // strides {1, rows}: column-major memory under a dynamic layout
    const auto pred = xt::adapt(fx.pred.data(), n, xt::no_ownership(), shape, dynamic_shape{1, rows});
    const auto regression = xt::adapt(fx.regression_target.data(), n, xt::no_ownership(), shape,
                                      std::vector<std::ptrdiff_t>{cols, 1});
    // a [2, 3, 5] view of 30 elements whose middle axis is innermost: still dense
    const auto binary = xt::adapt(fx.binary_target.data(), n, xt::no_ownership(), dynamic_shape{2, 3, 5},
                                  std::vector<std::ptrdiff_t>{15, 1, 3});
    auto grad = xt::adapt(fx.grad.data(), n, xt::no_ownership(), shape, std::vector<std::ptrdiff_t>{cols, 1});
    check_all_terms(pred, regression, binary, grad, fx.grad.data(), fx);
  }
  SECTION("an adaptor that acquired ownership, named") {
    // the adaptor frees the buffer with std::allocator<T>, so it must come from there
    T* owned = std::allocator<T>().allocate(n);
    std::copy(fx.pred.begin(), fx.pred.end(), owned);
    const auto pred = xt::adapt(owned, n, xt::acquire_ownership(), shape);
    const auto regression = xt::adapt(fx.regression_target, shape);
    const auto binary = xt::adapt(fx.binary_target, shape);
    auto grad = xt::adapt(fx.grad, shape);
    check_all_terms(pred, regression, binary, grad, fx.grad.data(), fx);
  }
}

TEMPLATE_TEST_CASE("xtensor: temporary adaptors are accepted and an adapted gradient output is written",
                   "[xtensor]", float, double) {
  using T = TestType;
  fixture<T> fx(n);
  const dynamic_shape shape{rows, cols};
  std::vector<T> grad(n, T(-99));
  const auto expected = reduce_reference(
      [](long double p, long double t) { return huber_reference(p, t, 1.0L); }, fx.pred,
      fx.regression_target, ones(n), sl::reduction::mean);
  // Adaptors made in the call are fine: they point at storage that outlives the evaluation.
  const auto result = sl::evaluate(
      sl::Huber<T>{.delta = T(1)},
      sl::inputs(xt::adapt(fx.pred.data(), n, xt::no_ownership(), shape), xt::adapt(fx.regression_target, shape)),
      xt::adapt(grad, shape));
  CHECK(close(result.value, expected.value));
  CHECK(count_mismatches(grad.data(), expected.grad, 1.0L / n) == 0);

  // sl::inputs keeps pointers to the storage, never to the adaptor objects: these adaptors are
  // gone before evaluate runs (under ASan a pointer into them would be a stack-use-after-scope).
  const T* pred_pointer = fx.pred.data();
  const auto kept = sl::inputs(xt::adapt(pred_pointer, n, xt::no_ownership(), shape),
                               xt::adapt(fx.regression_target.data(), shape));
  std::fill(grad.begin(), grad.end(), T(-99));
  const auto later = sl::evaluate(sl::Huber<T>{.delta = T(1)}, kept, xt::adapt(grad));
  CHECK(close(later.value, expected.value));
  CHECK(count_mismatches(grad.data(), expected.grad, 1.0L / n) == 0);
  CHECK(close(sl::value(sl::Huber<T>{.delta = T(1)},
                        sl::inputs(xt::adapt(fx.pred), xt::adapt(fx.regression_target.data(), shape)))
                  .value,
              expected.value));
}

// ---------------------------------------------------------------------------------------------
// Weighting: a mask, per-sequence lengths over a padded [batch, time, features] layout

TEMPLATE_TEST_CASE("xtensor: a frame mask and per-sequence lengths match the weighted reference", "[xtensor]",
                   float, double) {
  using T = TestType;
  // [batch = 2, time = 5, features = 3], row-major
  constexpr std::size_t batch = 2, max_frames = 5, features = 3, count = batch * max_frames * features;
  const std::array<std::size_t, 3> shape{batch, max_frames, features};
  const fixture<T> fx(count, 11);
  using tensor3 = xt::xtensor<T, 3>;
  const auto pred = memory_copy<tensor3>(fx.pred, shape);
  const auto regression = memory_copy<tensor3>(fx.regression_target, shape);
  const auto binary = memory_copy<tensor3>(fx.binary_target, shape);
  tensor3 grad = tensor3::from_shape(shape);

  SECTION("lengths {5, 2}") {
    const std::vector<int> lengths{5, 2};
    std::vector<long double> weights(count, 0.0L);
    for (std::size_t b = 0; b < batch; ++b)
      for (std::size_t t = 0; t < static_cast<std::size_t>(lengths[b]); ++t)
        for (std::size_t f = 0; f < features; ++f) weights[(b * max_frames + t) * features + f] = 1;
    check_all_terms(pred, regression, binary, grad, grad.data(), fx, weights, [&](const auto& p, const auto& t) {
      return sl::inputs(p, t, sl::lengths(lengths, max_frames, features));
    });
    // padding frames get a zero gradient
    const bool padding_is_zero = xt::all(xt::equal(xt::view(grad, 1, xt::range(2, 5), xt::all()), T(0)));
    CHECK(padding_is_zero);
  }
  SECTION("a [batch, time] frame mask as an xtensor<T, 2>") {
    const xt::xtensor<T, 2> mask = {{1, 1, 0.5, 0, 1}, {1, 1, 0, 0, 0}};
    std::vector<long double> weights(count);
    for (std::size_t i = 0; i < count; ++i) weights[i] = mask.data()[i / features];
    check_all_terms(pred, regression, binary, grad, grad.data(), fx, weights,
                    [&](const auto& p, const auto& t) { return sl::inputs(p, t, sl::per_frame(mask, features)); });
  }
  SECTION("an element mask as an xarray") {
    xt::xarray<T> mask = xt::xarray<T>::from_shape({batch, max_frames, features});
    std::vector<long double> weights(count);
    for (std::size_t i = 0; i < count; ++i) {
      mask.data()[i] = static_cast<T>((i * 7) % 4) / T(2);  // 0, 1.5, 1, 0.5, ...
      weights[i] = mask.data()[i];
    }
    check_all_terms(pred, regression, binary, grad, grad.data(), fx, weights,
                    [&](const auto& p, const auto& t) { return sl::inputs(p, t, mask); });
  }
}

// ---------------------------------------------------------------------------------------------
// Composition

TEMPLATE_TEST_CASE("xtensor: a composed mel + stop loss writes each term's weighted gradient", "[xtensor]",
                   float, double) {
  using T = TestType;
  constexpr std::size_t batch = 2, frames = 5, mel_bins = 4;
  const fixture<T> mel(batch * frames * mel_bins, 3), stop(batch * frames, 5);
  const auto mel_pred = memory_copy<xt::xtensor<T, 3>>(mel.pred, std::array<std::size_t, 3>{batch, frames, mel_bins});
  const auto mel_target =
      memory_copy<xt::xtensor<T, 3>>(mel.regression_target, std::array<std::size_t, 3>{batch, frames, mel_bins});
  const auto stop_logits = memory_copy<xt::xtensor<T, 2>>(stop.pred, shape2{batch, frames});
  const auto stop_target = memory_copy<xt::xtensor<T, 2>>(stop.binary_target, shape2{batch, frames});
  const xt::xtensor<T, 2> frame_mask = {{1, 1, 1, 1, 1}, {1, 1, 0, 0, 0}};
  xt::xtensor<T, 3> d_mel = xt::xtensor<T, 3>::from_shape({batch, frames, mel_bins});
  xt::xtensor<T, 2> d_stop = xt::xtensor<T, 2>::from_shape({batch, frames});

  auto loss = sl::compose(sl::term(sl::Huber<T>{.delta = T(1)}, T(35)),
                          sl::term(sl::LabelSmoothing{sl::BalancedBCE<T>{.pos_weight = T(5)}, T(0.05)}, T(1)));
  const auto r = loss.evaluate(sl::inputs(mel_pred, mel_target, sl::per_frame(frame_mask, mel_bins)),
                               sl::inputs(stop_logits, stop_target, frame_mask), sl::grads(d_mel, d_stop));

  std::vector<long double> mel_weights(batch * frames * mel_bins), stop_weights(batch * frames);
  for (std::size_t i = 0; i < mel_weights.size(); ++i) mel_weights[i] = frame_mask.data()[i / mel_bins];
  for (std::size_t i = 0; i < stop_weights.size(); ++i) stop_weights[i] = frame_mask.data()[i];
  const long double eps = T(0.05);
  auto mel_expected = reduce_reference(
      [](long double p, long double t) { return huber_reference(p, t, 1.0L); }, mel.pred,
      mel.regression_target, mel_weights, sl::reduction::mean);
  const auto stop_expected = reduce_reference(
      [eps](long double p, long double t) { return bce_reference(p, t * (1 - eps) + eps / 2, 5.0L); },
      stop.pred, stop.binary_target, stop_weights, sl::reduction::mean);
  CHECK(close(r.values[0], mel_expected.value));
  CHECK(close(r.values[1], stop_expected.value));
  CHECK(close(r.total, 35 * mel_expected.value + stop_expected.value, 35));
  for (long double& g : mel_expected.grad) g *= 35;  // each term's gradient carries its weight
  CHECK(count_mismatches(d_mel.data(), mel_expected.grad, 35.0L / (7 * mel_bins)) == 0);
  CHECK(count_mismatches(d_stop.data(), stop_expected.grad, 1.0L / 7) == 0);
}

TEMPLATE_TEST_CASE("xtensor: AdaptiveHuber with lengths and a frame mask matches Huber / delta, and follows an ErrorScale",
                   "[xtensor][adaptive_huber]", float, double) {
  using T = TestType;
  using namespace adaptive_huber_case;
  // [batch, time, features] mel with lengths; a [batch, time] frame term with a mask.
  const fixture<T> mel(count, 21), frame(frames, 22);
  const std::array<std::size_t, 3> shape{batch, max_frames, features};
  const auto mel_pred = memory_copy<xt::xtensor<T, 3>>(mel.pred, shape);
  const auto mel_target = memory_copy<xt::xtensor<T, 3>>(mel.regression_target, shape);
  const auto frame_pred = memory_copy<xt::xtensor<T, 2>>(frame.pred, shape2{batch, max_frames});
  const auto frame_target = memory_copy<xt::xtensor<T, 2>>(frame.regression_target, shape2{batch, max_frames});
  const auto mask = memory_copy<xt::xtensor<T, 2>>(
      std::vector<T>(std::begin(adaptive_huber_case::mask), std::end(adaptive_huber_case::mask)),
      shape2{batch, max_frames});
  xt::xtensor<T, 3> d_mel = xt::xtensor<T, 3>::from_shape(shape);
  xt::xtensor<T, 2> d_frame = xt::xtensor<T, 2>::from_shape({batch, max_frames});
  check_adaptive_huber(mel, frame, mel_pred, mel_target, frame_pred, frame_target, mask, d_mel, d_frame);
}

// ---------------------------------------------------------------------------------------------
// Layout

TEMPLATE_TEST_CASE("xtensor: row- and column-major containers are read in memory order", "[xtensor]", float,
                   double) {
  using T = TestType;
  const fixture<T> fx(n);
  const sl::Huber<T> huber{.delta = T(1)};

  // The same memory seen as a row-major 6x5 and a column-major 5x6: identical results.
  const auto row_view = xt::adapt(fx.pred.data(), n, xt::no_ownership(), shape2{rows, cols});
  const auto column_view = xt::adapt<xt::layout_type::column_major>(fx.pred.data(), n, xt::no_ownership(),
                                                                    shape2{cols, rows});
  const auto target_row_view = xt::adapt(fx.regression_target.data(), n, xt::no_ownership(), shape2{rows, cols});
  const auto target_column_view = xt::adapt<xt::layout_type::column_major>(
      fx.regression_target.data(), n, xt::no_ownership(), shape2{cols, rows});
  xt::xtensor<T, 2> grad_row = xt::xtensor<T, 2>::from_shape({rows, cols});
  xt::xtensor<T, 2, xt::layout_type::column_major> grad_column =
      xt::xtensor<T, 2, xt::layout_type::column_major>::from_shape({cols, rows});
  const auto row_result = sl::evaluate(huber, sl::inputs(row_view, target_row_view), grad_row);
  const auto column_result = sl::evaluate(huber, sl::inputs(column_view, target_column_view), grad_column);
  CHECK(row_result.value == column_result.value);
  CHECK(std::equal(grad_row.data(), grad_row.data() + n, grad_column.data()));

  // The same logical array in both layouts: the same mean (a permutation of the elements), and
  // the same gradient element by element, each in its own memory order.
  const xt::xtensor<T, 2> logical_pred = row_view, logical_target = target_row_view;
  const xt::xtensor<T, 2, xt::layout_type::column_major> pred_columns = logical_pred, target_columns = logical_target;
  xt::xtensor<T, 2, xt::layout_type::column_major> grad_columns =
      xt::xtensor<T, 2, xt::layout_type::column_major>::from_shape({rows, cols});
  const auto columns_result = sl::evaluate(huber, sl::inputs(pred_columns, target_columns), grad_columns);
  CHECK(close(columns_result.value, static_cast<long double>(row_result.value)));
  const bool same_logical_gradient = grad_columns == grad_row;
  CHECK(same_logical_gradient);
  CHECK_FALSE(std::equal(grad_row.data(), grad_row.data() + n, grad_columns.data()));
}

// ---------------------------------------------------------------------------------------------
// Errors

TEMPLATE_TEST_CASE("xtensor: wrong sizes throw shape_mismatch", "[xtensor]", float, double) {
  using T = TestType;
  const xt::xarray<T> pred = xt::ones<T>({4, 3}), target = xt::zeros<T>({3, 3});
  xt::xtensor<T, 2> grad = xt::zeros<T>({4, 3}), short_grad = xt::zeros<T>({2, 3});
  const xt::xtensor<T, 1> wrong_mask = xt::ones<T>({5});
  CHECK_THROWS_AS(sl::evaluate(sl::Huber<T>{}, sl::inputs(pred, target), grad), sl::shape_mismatch);
  CHECK_THROWS_AS(sl::evaluate(sl::MSE<T>{}, sl::inputs(pred, pred), short_grad), sl::shape_mismatch);
  CHECK_THROWS_AS(sl::value(sl::L1<T>{}, sl::inputs(pred, pred, wrong_mask)), sl::shape_mismatch);
  const std::vector<int> lengths{1, 1, 1};
  CHECK_THROWS_AS(sl::value(sl::L1<T>{}, sl::inputs(pred, pred, sl::lengths(lengths, 5, 1))), sl::shape_mismatch);
  CHECK_THROWS_WITH(sl::value(sl::Huber<T>{}, sl::inputs(pred, target)),
                    Catch::Contains("pred has 12 elements, target 9"));

  // an adapted vector resized behind the adaptor's back: the shape no longer fits the buffer
  std::vector<T> storage(12, T(1));
  const auto adapted = xt::adapt(storage, dynamic_shape{4, 3});
  storage.resize(6);
  CHECK_THROWS_AS(sl::value(sl::L1<T>{}, sl::inputs(adapted, pred)), sl::shape_mismatch);
  CHECK_THROWS_WITH(sl::value(sl::L1<T>{}, sl::inputs(adapted, pred)),
                    Catch::Contains("shape has 12 elements but its buffer only 6"));
}

TEMPLATE_TEST_CASE("xtensor: strides that are not dense throw invalid_input", "[xtensor]", float, double) {
  using T = TestType;
  std::vector<T> storage(6, T(1)), grad_storage(6, T(-99));
  const xt::xtensor<T, 2> target = xt::zeros<T>({2, 3});
  // every other element along the last axis (xtensor itself lets these strides run past the buffer)
  const auto strided = xt::adapt(storage.data(), 6, xt::no_ownership(), dynamic_shape{2, 3},
                                 std::vector<std::ptrdiff_t>{3, 2});
  CHECK_THROWS_AS(sl::value(sl::L1<T>{}, sl::inputs(strided, target)), sl::invalid_input);
  CHECK_THROWS_WITH(sl::value(sl::L1<T>{}, sl::inputs(strided, target)),
                    Catch::Contains("not dense (shape:stride 2:3, 3:2)"));
  // a broadcast-like zero stride
  const auto repeated = xt::adapt(storage.data(), 6, xt::no_ownership(), dynamic_shape{2, 3},
                                  std::vector<std::ptrdiff_t>{0, 1});
  CHECK_THROWS_AS(sl::value(sl::L1<T>{}, sl::inputs(repeated, target)), sl::invalid_input);
  // as a gradient output it is refused before anything is written
  auto strided_grad = xt::adapt(grad_storage.data(), 6, xt::no_ownership(), dynamic_shape{2, 3},
                                std::vector<std::ptrdiff_t>{1, 1});
  CHECK_THROWS_AS(sl::evaluate(sl::MSE<T>{}, sl::inputs(target, target), strided_grad), sl::invalid_input);
  CHECK(std::all_of(grad_storage.begin(), grad_storage.end(), [](T g) { return g == T(-99); }));
}
