// The Eigen backend (steadyloss/backend/eigen.hpp): every admitted Eigen type gives the values and
// gradients of an independent long double reference worked straight from the closed forms in
// the README's semantics table; strided storage that only run time can see is refused with invalid_input.
// What is rejected at compile time is proved by tests/compile_fail/eigen_*.cpp.

#include <steadyloss/backend/eigen.hpp>
#include <steadyloss/steadyloss.hpp>

#include <catch2/catch.hpp>

#include "backend_reference.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace sl = steadyloss;

namespace {

using namespace backend_reference;

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <class T>
using row_major_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

constexpr Eigen::Index rows = 6, cols = 5;
constexpr std::size_t n = rows * cols;

/// A user type that is an Eigen matrix by inheritance.
template <class T>
struct derived_matrix : matrix<T> {
  derived_matrix(Eigen::Index r, Eigen::Index c) : matrix<T>(r, c) {}
  explicit derived_matrix(const matrix<T>& m) : matrix<T>(m) {}
};

/// Copies memory-order values into an Eigen object of type E (rows x cols, its own storage order).
template <class E, class T>
E copy_as(const std::vector<T>& values, Eigen::Index r = rows, Eigen::Index c = cols) {
  return E(Eigen::Map<const E>(values.data(), r, c));
}


}  // namespace

// ---------------------------------------------------------------------------------------------
// What the traits say about each Eigen type (the compile-time half of the contract)

using Eigen::Dynamic;
using MatrixXf = Eigen::MatrixXf;

static_assert(sl::Tensor<Eigen::MatrixXf> && sl::Tensor<Eigen::ArrayXXd> && sl::Tensor<Eigen::Vector3f>);
static_assert(sl::MutableTensor<Eigen::MatrixXf&> && !sl::TensorView<Eigen::MatrixXf>,
              "an owning Matrix is writable and must be named (a temporary would dangle)");
static_assert(sl::TensorView<Eigen::Map<Eigen::MatrixXf>> && sl::MutableTensor<Eigen::Map<Eigen::MatrixXf>>);
static_assert(sl::TensorView<Eigen::Map<const Eigen::MatrixXf>> &&
                  !sl::MutableTensor<Eigen::Map<const Eigen::MatrixXf>>,
              "a Map over const storage reads only");
static_assert(sl::TensorView<Eigen::Map<Eigen::MatrixXf, 0, Eigen::OuterStride<>>>,
              "a strided Map is admitted and checked at run time");
static_assert(sl::TensorView<Eigen::Ref<Eigen::MatrixXf>> && sl::MutableTensor<Eigen::Ref<Eigen::MatrixXf>>);
static_assert(sl::Tensor<Eigen::Ref<const Eigen::MatrixXf>> && !sl::TensorView<Eigen::Ref<const Eigen::MatrixXf>> &&
                  !sl::MutableTensor<Eigen::Ref<const Eigen::MatrixXf>>,
              "a Ref<const X> may own an evaluated copy, so it must be named");
static_assert(sl::TensorView<decltype(std::declval<MatrixXf&>().col(0))> &&
              sl::MutableTensor<decltype(std::declval<MatrixXf&>().col(0))>);
static_assert(sl::TensorView<decltype(std::declval<MatrixXf&>().middleCols(0, 2))>);
static_assert(!sl::MutableTensor<decltype(std::declval<const MatrixXf&>().col(0))>,
              "a block of a const matrix reads only");
static_assert(sl::TensorView<decltype(std::declval<Eigen::VectorXf&>().segment(1, 2))> &&
              sl::TensorView<decltype(std::declval<Eigen::VectorXf&>().head(2))>);
static_assert(sl::TensorView<decltype(std::declval<row_major_matrix<float>&>().row(0))> &&
              sl::TensorView<decltype(std::declval<row_major_matrix<float>&>().middleRows(0, 2))>);
static_assert(sl::TensorView<decltype(std::declval<MatrixXf&>().array())>);
static_assert(std::is_same_v<sl::tensor_value_t<Eigen::ArrayXXd>, double> &&
              std::is_same_v<sl::tensor_value_t<Eigen::Map<const Eigen::VectorXf>>, float>);

// ---------------------------------------------------------------------------------------------
// Owning objects: Matrix, Array, fixed size, row- and column-major

TEMPLATE_TEST_CASE("eigen: Matrix and Array match the closed forms", "[eigen]", float, double) {
  using T = TestType;
  const fixture<T> fx(n);

  SECTION("column-major dynamic Matrix") {
    const auto pred = copy_as<matrix<T>>(fx.pred), regression = copy_as<matrix<T>>(fx.regression_target),
               binary = copy_as<matrix<T>>(fx.binary_target);
    matrix<T> grad(rows, cols);
    check_all_terms(pred, regression, binary, grad, grad.data(), fx);
  }
  SECTION("row-major dynamic Matrix") {
    const auto pred = copy_as<row_major_matrix<T>>(fx.pred),
               regression = copy_as<row_major_matrix<T>>(fx.regression_target),
               binary = copy_as<row_major_matrix<T>>(fx.binary_target);
    row_major_matrix<T> grad(rows, cols);
    check_all_terms(pred, regression, binary, grad, grad.data(), fx);
  }
  SECTION("dynamic Array") {
    using array = Eigen::Array<T, Dynamic, Dynamic>;
    const auto pred = copy_as<array>(fx.pred), regression = copy_as<array>(fx.regression_target),
               binary = copy_as<array>(fx.binary_target);
    array grad(rows, cols);
    check_all_terms(pred, regression, binary, grad, grad.data(), fx);
  }
  SECTION("fixed-size row-major Array and column vector") {
    using array = Eigen::Array<T, rows, cols, Eigen::RowMajor>;
    const auto pred = copy_as<array>(fx.pred), regression = copy_as<array>(fx.regression_target),
               binary = copy_as<array>(fx.binary_target);
    Eigen::Matrix<T, n, 1> grad;
    check_all_terms(pred, regression, binary, grad, grad.data(), fx);
  }
  SECTION("a type deriving from Matrix") {
    using spectrogram = derived_matrix<T>;
    const spectrogram pred(copy_as<matrix<T>>(fx.pred)), regression(copy_as<matrix<T>>(fx.regression_target)),
        binary(copy_as<matrix<T>>(fx.binary_target));
    spectrogram grad(rows, cols);
    check_all_terms(pred, regression, binary, grad, grad.data(), fx);
  }
}

// ---------------------------------------------------------------------------------------------
// Views: Map, Ref, contiguous blocks, wrappers

TEMPLATE_TEST_CASE("eigen: Map, Ref and contiguous blocks match the closed forms", "[eigen]", float, double) {
  using T = TestType;
  fixture<T> fx(n);

  SECTION("Map over const storage, gradient into a Map over a std::vector") {
    using map = Eigen::Map<const matrix<T>>;
    const map pred(fx.pred.data(), rows, cols), regression(fx.regression_target.data(), rows, cols),
        binary(fx.binary_target.data(), rows, cols);
    Eigen::Map<row_major_matrix<T>> grad(fx.grad.data(), rows, cols);
    check_all_terms(pred, regression, binary, grad, fx.grad.data(), fx);
  }
  SECTION("Map with a run-time outer stride that happens to be contiguous") {
    using map = Eigen::Map<const matrix<T>, 0, Eigen::OuterStride<>>;
    const Eigen::OuterStride<> stride(rows);
    const map pred(fx.pred.data(), rows, cols, stride), regression(fx.regression_target.data(), rows, cols, stride),
        binary(fx.binary_target.data(), rows, cols, stride);
    Eigen::Map<matrix<T>, 0, Eigen::OuterStride<>> grad(fx.grad.data(), rows, cols, stride);
    check_all_terms(pred, regression, binary, grad, fx.grad.data(), fx);
  }
  SECTION("Ref<const Matrix> and Ref<Matrix> over whole matrices") {
    matrix<T> pred_storage = copy_as<matrix<T>>(fx.pred), grad_storage(rows, cols);
    const matrix<T> regression_storage = copy_as<matrix<T>>(fx.regression_target),
                    binary_storage = copy_as<matrix<T>>(fx.binary_target);
    const Eigen::Ref<const matrix<T>> pred(pred_storage), regression(regression_storage), binary(binary_storage);
    Eigen::Ref<matrix<T>> grad(grad_storage);
    check_all_terms(pred, regression, binary, grad, grad_storage.data(), fx);
    // a named Ref<const X> bound to an expression owns the evaluated copy: admitted
    const Eigen::Ref<const matrix<T>> doubled = pred_storage * T(2);
    const matrix<T> doubled_matrix = pred_storage * T(2);
    CHECK(sl::value(sl::MSE<T>{}, sl::inputs(doubled, regression)).value ==
          sl::value(sl::MSE<T>{}, sl::inputs(doubled_matrix, regression)).value);
  }
  SECTION("col(j) and middleCols of column-major matrices") {
    // Each tensor is the middle column (or the middle two columns, read as one) of a wider matrix,
    // so a block that wrongly read its neighbours would see the -7 filler.
    auto widen = [](const std::vector<T>& values) {
      matrix<T> wide = matrix<T>::Constant(static_cast<Eigen::Index>(n), 3, T(-7));
      wide.col(1) = Eigen::Map<const vector<T>>(values.data(), static_cast<Eigen::Index>(n));
      return wide;
    };
    const matrix<T> pred = widen(fx.pred), regression = widen(fx.regression_target),
                    binary = widen(fx.binary_target);
    matrix<T> grad = matrix<T>::Zero(static_cast<Eigen::Index>(n), 3);
    auto grad_column = grad.col(1);
    check_all_terms(pred.col(1), regression.col(1), binary.col(1), grad_column, grad.col(1).data(), fx);
    CHECK((grad.col(0).array() == T(0)).all());  // neighbours untouched
    CHECK((grad.col(2).array() == T(0)).all());

    matrix<T> padded = matrix<T>::Constant(rows, cols + 2, T(-7));
    padded.middleCols(1, cols) = copy_as<matrix<T>>(fx.pred);
    matrix<T> grad_panel_storage = matrix<T>::Zero(rows, cols + 2);
    auto grad_panel = grad_panel_storage.middleCols(1, cols);
    const auto regression_matrix = copy_as<matrix<T>>(fx.regression_target);
    const auto binary_matrix = copy_as<matrix<T>>(fx.binary_target);
    check_all_terms(std::as_const(padded).middleCols(1, cols), regression_matrix, binary_matrix,
                    grad_panel, grad_panel.data(), fx);
    CHECK((grad_panel_storage.col(0).array() == T(0)).all());
  }
  SECTION("row(i) and middleRows of row-major matrices") {
    row_major_matrix<T> pred(3, static_cast<Eigen::Index>(n)), regression(3, static_cast<Eigen::Index>(n)),
        binary(3, static_cast<Eigen::Index>(n));
    pred.setConstant(T(-7));
    regression.setConstant(T(-7));
    binary.setConstant(T(0));
    pred.row(2) = Eigen::Map<const vector<T>>(fx.pred.data(), static_cast<Eigen::Index>(n)).transpose();
    regression.row(2) = Eigen::Map<const vector<T>>(fx.regression_target.data(), static_cast<Eigen::Index>(n)).transpose();
    binary.row(2) = Eigen::Map<const vector<T>>(fx.binary_target.data(), static_cast<Eigen::Index>(n)).transpose();
    row_major_matrix<T> grad = row_major_matrix<T>::Zero(3, static_cast<Eigen::Index>(n));
    auto grad_row = grad.row(2);
    check_all_terms(pred.row(2), regression.row(2), binary.middleRows(2, 1), grad_row, grad_row.data(), fx);
    CHECK((grad.topRows(2).array() == T(0)).all());
  }
  SECTION("segment and head of vectors, and .array() of a matrix") {
    vector<T> pred(static_cast<Eigen::Index>(n) + 4), regression(static_cast<Eigen::Index>(n) + 4),
        binary(static_cast<Eigen::Index>(n));
    pred.setConstant(T(-7));
    regression.setConstant(T(-7));
    pred.segment(2, static_cast<Eigen::Index>(n)) = Eigen::Map<const vector<T>>(fx.pred.data(), static_cast<Eigen::Index>(n));
    regression.head(static_cast<Eigen::Index>(n)) =
        Eigen::Map<const vector<T>>(fx.regression_target.data(), static_cast<Eigen::Index>(n));
    binary = Eigen::Map<const vector<T>>(fx.binary_target.data(), static_cast<Eigen::Index>(n));
    matrix<T> grad(static_cast<Eigen::Index>(n), 1);
    auto grad_array = grad.array();
    check_all_terms(pred.segment(2, static_cast<Eigen::Index>(n)), regression.head(static_cast<Eigen::Index>(n)),
                    binary.array(), grad_array, grad.data(), fx);
  }
}

TEMPLATE_TEST_CASE("eigen: temporary views are accepted and a Map gradient output is written", "[eigen]",
                   float, double) {
  using T = TestType;
  fixture<T> fx(n);
  std::vector<T> grad(n, T(-99));
  const auto expected = reduce_reference(
      [](long double p, long double t) { return huber_reference(p, t, 1.0L); }, fx.pred,
      fx.regression_target, ones(n), sl::reduction::mean);
  // A Map made in the call is fine: it points at storage that outlives the evaluation.
  const auto result = sl::evaluate(
      sl::Huber<T>{.delta = T(1)},
      sl::inputs(Eigen::Map<const matrix<T>>(fx.pred.data(), rows, cols),
                 Eigen::Map<const vector<T>>(fx.regression_target.data(), static_cast<Eigen::Index>(n))),
      Eigen::Map<matrix<T>>(grad.data(), rows, cols));
  CHECK(close(result.value, expected.value));
  CHECK(count_mismatches(grad.data(), expected.grad, 1.0L / n) == 0);

  // sl::inputs keeps pointers to the storage, never to the view objects: these Maps are gone
  // before evaluate runs (under ASan a pointer into them would be a stack-use-after-scope).
  const auto kept = sl::inputs(Eigen::Map<const matrix<T>>(fx.pred.data(), rows, cols),
                               Eigen::Map<const matrix<T>>(fx.regression_target.data(), rows, cols));
  std::fill(grad.begin(), grad.end(), T(-99));
  const auto later = sl::evaluate(sl::Huber<T>{.delta = T(1)}, kept,
                                  Eigen::Map<vector<T>>(grad.data(), static_cast<Eigen::Index>(n)));
  CHECK(close(later.value, expected.value));
  CHECK(count_mismatches(grad.data(), expected.grad, 1.0L / n) == 0);

  matrix<T> pred = copy_as<matrix<T>>(fx.pred), target = copy_as<matrix<T>>(fx.regression_target);
  matrix<T> grad_matrix = matrix<T>::Constant(rows, cols, T(-99));
  const auto from_columns = sl::evaluate(sl::Huber<T>{.delta = T(1)}, sl::inputs(pred.col(2), target.col(2)),
                                         grad_matrix.col(2));
  const std::vector<T> pred_column(fx.pred.begin() + 2 * rows, fx.pred.begin() + 3 * rows),
      target_column(fx.regression_target.begin() + 2 * rows, fx.regression_target.begin() + 3 * rows);
  const auto expected_column = reduce_reference(
      [](long double p, long double t) { return huber_reference(p, t, 1.0L); }, pred_column,
      target_column, ones(rows), sl::reduction::mean);
  CHECK(close(from_columns.value, expected_column.value));
  CHECK(count_mismatches(grad_matrix.col(2).data(), expected_column.grad, 1.0L / rows) == 0);
  CHECK((grad_matrix.col(1).array() == T(-99)).all());
}

// ---------------------------------------------------------------------------------------------
// Weighting: a mask, per-sequence lengths over a padded [batch, time, features] layout

TEMPLATE_TEST_CASE("eigen: a frame mask and per-sequence lengths match the weighted reference", "[eigen]",
                   float, double) {
  using T = TestType;
  // [batch = 2, time = 5, features = 3], row-major: row b * 5 + t of a (10 x 3) row-major matrix.
  constexpr Eigen::Index batch = 2, max_frames = 5, features = 3;
  constexpr std::size_t count = batch * max_frames * features;
  const fixture<T> fx(count, 11);
  const auto pred = copy_as<row_major_matrix<T>>(fx.pred, batch * max_frames, features);
  const auto regression = copy_as<row_major_matrix<T>>(fx.regression_target, batch * max_frames, features);
  const auto binary = copy_as<row_major_matrix<T>>(fx.binary_target, batch * max_frames, features);
  row_major_matrix<T> grad(batch * max_frames, features);

  SECTION("lengths {5, 2}") {
    const std::vector<int> lengths{5, 2};
    std::vector<long double> weights(count, 0.0L);
    for (std::size_t b = 0; b < 2; ++b)
      for (std::size_t t = 0; t < static_cast<std::size_t>(lengths[b]); ++t)
        for (std::size_t f = 0; f < 3; ++f) weights[(b * 5 + t) * 3 + f] = 1;
    check_all_terms(pred, regression, binary, grad, grad.data(), fx, weights,
                    [&](const auto& p, const auto& t) { return sl::inputs(p, t, sl::lengths(lengths, 5, 3)); });
    // padding frames get a zero gradient
    CHECK((grad.middleRows(max_frames + 2, 3).array() == T(0)).all());
  }
  SECTION("a frame mask (one weight per [batch, time] frame) as an Eigen vector") {
    vector<T> mask(batch * max_frames);
    mask << 1, 1, 0.5, 0, 1, 1, 1, 0, 0, 0;
    std::vector<long double> weights(count);
    for (std::size_t i = 0; i < count; ++i) weights[i] = mask(static_cast<Eigen::Index>(i / 3));
    check_all_terms(pred, regression, binary, grad, grad.data(), fx, weights,
                    [&](const auto& p, const auto& t) { return sl::inputs(p, t, sl::per_frame(mask, features)); });
  }
  SECTION("an element mask as a row-major Array") {
    Eigen::Array<T, Dynamic, Dynamic, Eigen::RowMajor> mask(batch * max_frames, features);
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

TEMPLATE_TEST_CASE("eigen: a composed mel + stop loss writes each term's weighted gradient", "[eigen]",
                   float, double) {
  using T = TestType;
  constexpr Eigen::Index frames = 10, mel_bins = 4;
  const fixture<T> mel(frames * mel_bins, 3), stop(frames, 5);
  const auto mel_pred = copy_as<row_major_matrix<T>>(mel.pred, frames, mel_bins);
  const auto mel_target = copy_as<row_major_matrix<T>>(mel.regression_target, frames, mel_bins);
  const vector<T> stop_logits = Eigen::Map<const vector<T>>(stop.pred.data(), frames);
  const vector<T> stop_target = Eigen::Map<const vector<T>>(stop.binary_target.data(), frames);
  vector<T> frame_mask(frames);
  frame_mask << 1, 1, 1, 1, 1, 1, 1, 0, 0, 0;
  row_major_matrix<T> d_mel(frames, mel_bins);
  vector<T> d_stop(frames);

  auto loss = sl::compose(sl::term(sl::Huber<T>{.delta = T(1)}, T(35)),
                          sl::term(sl::LabelSmoothing{sl::BalancedBCE<T>{.pos_weight = T(5)}, T(0.05)}, T(1)));
  const auto r = loss.evaluate(sl::inputs(mel_pred, mel_target, sl::per_frame(frame_mask, mel_bins)),
                               sl::inputs(stop_logits, stop_target, frame_mask), sl::grads(d_mel, d_stop));

  std::vector<long double> mel_weights(frames * mel_bins), stop_weights(frames);
  for (Eigen::Index i = 0; i < frames * mel_bins; ++i) mel_weights[static_cast<std::size_t>(i)] = frame_mask(i / mel_bins);
  for (Eigen::Index i = 0; i < frames; ++i) stop_weights[static_cast<std::size_t>(i)] = frame_mask(i);
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

TEMPLATE_TEST_CASE("eigen: AdaptiveHuber with lengths and a frame mask matches Huber / delta, and follows an ErrorScale",
                   "[eigen][adaptive_huber]", float, double) {
  using T = TestType;
  using namespace adaptive_huber_case;
  // The mel row-major [batch x time, features] with lengths; the frame term and its mask as Eigen
  // vectors.
  const fixture<T> mel(count, 21), frame(frames, 22);
  const Eigen::Index rows = batch * max_frames;
  const auto mel_pred = copy_as<row_major_matrix<T>>(mel.pred, rows, features);
  const auto mel_target = copy_as<row_major_matrix<T>>(mel.regression_target, rows, features);
  const vector<T> frame_pred = Eigen::Map<const vector<T>>(frame.pred.data(), frames);
  const vector<T> frame_target = Eigen::Map<const vector<T>>(frame.regression_target.data(), frames);
  const vector<T> mask = Eigen::Map<const Eigen::VectorXd>(adaptive_huber_case::mask, frames).cast<T>();
  row_major_matrix<T> d_mel(rows, features);
  vector<T> d_frame(frames);
  check_adaptive_huber(mel, frame, mel_pred, mel_target, frame_pred, frame_target, mask, d_mel, d_frame);
}

// ---------------------------------------------------------------------------------------------
// Storage order

TEMPLATE_TEST_CASE("eigen: row- and column-major objects are read in memory order", "[eigen]", float, double) {
  using T = TestType;
  const fixture<T> fx(n);
  const sl::Huber<T> huber{.delta = T(1)};

  // The same memory seen as a column-major 6x5 and a row-major 5x6: identical results.
  const Eigen::Map<const matrix<T>> column_view(fx.pred.data(), rows, cols);
  const Eigen::Map<const row_major_matrix<T>> row_view(fx.pred.data(), cols, rows);
  const Eigen::Map<const matrix<T>> target_column_view(fx.regression_target.data(), rows, cols);
  const Eigen::Map<const row_major_matrix<T>> target_row_view(fx.regression_target.data(), cols, rows);
  matrix<T> grad_column(rows, cols);
  row_major_matrix<T> grad_row(cols, rows);
  const auto column_result = sl::evaluate(huber, sl::inputs(column_view, target_column_view), grad_column);
  const auto row_result = sl::evaluate(huber, sl::inputs(row_view, target_row_view), grad_row);
  CHECK(column_result.value == row_result.value);
  CHECK(std::equal(grad_column.data(), grad_column.data() + n, grad_row.data()));

  // The same logical matrix in both orders: the same mean (a permutation of the elements), and
  // the same gradient element by element, each in its own memory order.
  const matrix<T> logical_pred = column_view, logical_target = target_column_view;
  const row_major_matrix<T> pred_rows = logical_pred, target_rows = logical_target;
  row_major_matrix<T> grad_rows(rows, cols);
  const auto rows_result = sl::evaluate(huber, sl::inputs(pred_rows, target_rows), grad_rows);
  CHECK(close(rows_result.value, static_cast<long double>(column_result.value)));
  CHECK((grad_rows.array() == grad_column.array()).all());
}

// ---------------------------------------------------------------------------------------------
// Errors

TEMPLATE_TEST_CASE("eigen: wrong sizes throw shape_mismatch", "[eigen]", float, double) {
  using T = TestType;
  const matrix<T> pred = matrix<T>::Ones(4, 3), target = matrix<T>::Zero(3, 3);
  matrix<T> grad(4, 3), short_grad(2, 3);
  const vector<T> wrong_mask = vector<T>::Ones(5);
  CHECK_THROWS_AS(sl::evaluate(sl::Huber<T>{}, sl::inputs(pred, target), grad), sl::shape_mismatch);
  CHECK_THROWS_AS(sl::evaluate(sl::MSE<T>{}, sl::inputs(pred, pred), short_grad), sl::shape_mismatch);
  CHECK_THROWS_AS(sl::value(sl::L1<T>{}, sl::inputs(pred, pred, wrong_mask)), sl::shape_mismatch);
  const std::vector<int> lengths{1, 1, 1};
  CHECK_THROWS_AS(sl::value(sl::L1<T>{}, sl::inputs(pred, pred, sl::lengths(lengths, 5, 1))), sl::shape_mismatch);
  CHECK_THROWS_WITH(sl::value(sl::Huber<T>{}, sl::inputs(pred, target)),
                    Catch::Contains("pred has 12 elements, target 9"));
}

TEMPLATE_TEST_CASE("eigen: storage that is strided at run time throws invalid_input", "[eigen]", float, double) {
  using T = TestType;
  matrix<T> m = matrix<T>::Random(4, 6);
  matrix<T> other = matrix<T>::Random(2, 2);

  SECTION("Ref over a 2x2 block of a 4-row matrix") {
    Eigen::Ref<matrix<T>> block_ref = m.block(0, 0, 2, 2);
    const Eigen::Ref<const matrix<T>> const_ref = std::as_const(m).block(1, 1, 2, 2);
    CHECK_THROWS_AS(sl::inputs(block_ref, other), sl::invalid_input);
    CHECK_THROWS_AS(sl::inputs(other, const_ref), sl::invalid_input);
    CHECK_THROWS_WITH(sl::inputs(block_ref, other),
                      Catch::Contains("Eigen::Ref (2 x 2) is not contiguous") &&
                          Catch::Contains("outer stride 4"));
    // as a gradient output it is refused before anything is written
    const matrix<T> before = m;
    CHECK_THROWS_AS(sl::evaluate(sl::MSE<T>{}, sl::inputs(other, other), block_ref), sl::invalid_input);
    CHECK(m == before);
  }
  SECTION("Ref<Vector, 0, InnerStride<>> over a row of a column-major matrix") {
    Eigen::Ref<const vector<T>, 0, Eigen::InnerStride<>> row = m.row(1).transpose();
    const vector<T> target = vector<T>::Zero(6);
    CHECK_THROWS_AS(sl::value(sl::L1<T>{}, sl::inputs(row, target)), sl::invalid_input);
  }
  SECTION("Map with an outer stride larger than the column") {
    std::vector<T> storage(30, T(1));
    const Eigen::Map<const matrix<T>, 0, Eigen::OuterStride<>> strided(storage.data(), 4, 3, Eigen::OuterStride<>(5));
    const matrix<T> target = matrix<T>::Zero(4, 3);
    CHECK_THROWS_AS(sl::value(sl::L1<T>{}, sl::inputs(strided, target)), sl::invalid_input);
    const Eigen::Map<const vector<T>, 0, Eigen::InnerStride<2>> every_other(storage.data(), 12);
    CHECK_THROWS_AS(sl::value(sl::L1<T>{}, sl::inputs(every_other, target)), sl::invalid_input);
  }
  SECTION("an inner panel of a block that is itself strided") {
    // middleCols of a 2-row block of a 4-row matrix: admitted as an InnerPanel block, strided in fact
    auto panel = m.topRows(2).middleCols(1, 2);
    const matrix<T> target = matrix<T>::Zero(2, 2);
    CHECK_THROWS_AS(sl::value(sl::L1<T>{}, sl::inputs(panel, target)), sl::invalid_input);
    // a single column of it is contiguous
    const vector<T> column_target = vector<T>::Zero(2);
    CHECK_NOTHROW(sl::value(sl::L1<T>{}, sl::inputs(m.topRows(2).col(3), column_target)));
  }
}
