// The peers' own early-stopping tests, ported: each case's sequence, settings and expected stop
// step are theirs (PyTorch Lightning tests/tests_pytorch/callbacks/test_early_stopping.py, Keras
// keras/src/callbacks/early_stopping_test.py, ignite tests/ignite/handlers/test_early_stopping.py).
// An epoch index there is a step index here; "stops at k" means the k-th update (0-based)
// reports should_stop, which for Lightning is `trainer.current_epoch - 1` and for Keras
// `stopped_epoch`. Peers' defaults are spelled out: Lightning patience 3, min_delta 0, min mode;
// Keras patience 0, min_delta 0; ignite mode max, cumulative false.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <steadyloss/stability/early_stopper.hpp>
#include <steadyloss/stability/stabilizer.hpp>

#include "early_stopper_helpers.hpp"

namespace sl = steadyloss;

namespace {
using early_stopper_helpers::stop_step;

template <class T>
typename sl::EarlyStopper<T>::config lightning(int patience = 3) {
  return {.patience = patience, .min_delta = 0.0, .mode = sl::stop_mode::min};
}

// ignite: EarlyStopping(patience, threshold, threshold_mode, cumulative, mode="max").
sl::EarlyStopper<double>::config ignite(int patience, double threshold = 0.0, bool relative = false,
                                        bool cumulative = false, sl::stop_mode mode = sl::stop_mode::max) {
  return {.patience = patience, .min_delta = threshold, .mode = mode, .relative_min_delta = relative,
          .cumulative_delta = cumulative};
}
}  // namespace

// Lightning logs Python numbers as float32 tensors by default; float64 gives the same stops here.
TEMPLATE_TEST_CASE("Lightning's early-stopping tests", "[stability][early_stop][peers]", float, double) {
  using T = TestType;
  SECTION("test_early_stopping_patience") {
    struct Case { std::vector<double> losses; int patience; long long stop; };
    for (const Case& c : {Case{{6, 5, 5, 5, 5, 5}, 3, 4}, Case{{6, 5, 4, 4, 3, 3}, 1, 3}, Case{{6, 5, 6, 5, 5, 5}, 3, 4}}) {
      sl::EarlyStopper<T> stopper(lightning<T>(c.patience));
      CHECK(stop_step(stopper, c.losses) == c.stop);
    }
  }
  SECTION("test_early_stopping_thresholds") {
    sl::EarlyStopper<T> plain(lightning<T>());
    CHECK(stop_step(plain, {8, 4, 2, 3, 4, 5, 8, 10}) == 5);
    auto with_stop = lightning<T>();
    with_stop.stopping_threshold = 2.9;
    sl::EarlyStopper<T> stopping(with_stop);
    CHECK(stop_step(stopping, {9, 8, 7, 6, 5, 6, 4, 3, 2, 1}) == 8);
    CHECK(stopping.reason() == sl::stop_reason::stopping_threshold);
    auto with_divergence = lightning<T>();
    with_divergence.divergence_threshold = 15.9;
    sl::EarlyStopper<T> diverging(with_divergence);
    CHECK(stop_step(diverging, {9, 4, 2, 16, 32, 64}) == 3);
    CHECK(diverging.reason() == sl::stop_reason::divergence_threshold);
  }
  SECTION("test_early_stopping_on_non_finite_monitor") {
    for (double bad : {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
      sl::EarlyStopper<T> stopper(lightning<T>());
      CHECK(stop_step(stopper, {4, 3, bad, 2, 1}) == 2);
      CHECK(stopper.stop_step() == 2);
      CHECK(stopper.reason() == sl::stop_reason::non_finite);
    }
  }
  SECTION("test_multiple_early_stopping_callbacks: each callback's own stop") {
    sl::EarlyStopper<T> abc(lightning<T>());
    CHECK(stop_step(abc, {8, 4, 2, 3, 4, 5, 8, 10}) == 5);
    sl::EarlyStopper<T> cba(lightning<T>(3));
    CHECK(stop_step(cba, {0, 0, 0, 0, 0, 0, 0, 0}) == 3);  // the run stops at the first: 3
    sl::EarlyStopper<T> diverged(lightning<T>(1));    // rank 0 logs 10 from epoch 2 on
    CHECK(stop_step(diverged, {8, 4, 10, 10, 10}) == 2);
  }
  SECTION("test_early_stopping_reasons") {
    sl::EarlyStopper<T> high(lightning<T>(2));
    CHECK(stop_step(high, std::vector<double>(10, 10.0)) == 2);
    CHECK(high.reason() == sl::stop_reason::patience);
    auto decreasing_config = lightning<T>();
    decreasing_config.stopping_threshold = 0.6;
    sl::EarlyStopper<T> decreasing(decreasing_config);
    CHECK(stop_step(decreasing, {5.0, 3.0, 1.0, 0.5, 0.1, 0.1}) == 3);
    CHECK(decreasing.reason() == sl::stop_reason::stopping_threshold);
    auto increasing_config = lightning<T>();
    increasing_config.divergence_threshold = 8.0;
    sl::EarlyStopper<T> increasing(increasing_config);
    CHECK(stop_step(increasing, {1.0, 2.0, 5.0, 10.0, 15.0}) == 3);
    CHECK(increasing.reason() == sl::stop_reason::divergence_threshold);
    sl::EarlyStopper<T> nan_loss(lightning<T>());
    CHECK(stop_step(nan_loss, {1.0, 0.5, std::nan("")}) == 2);
    CHECK(nan_loss.reason() == sl::stop_reason::non_finite);
    sl::EarlyStopper<T> improving(lightning<T>(3));
    CHECK(stop_step(improving, {5.0, 4.0, 3.0}) == -1);  // max_epochs 3
    CHECK(improving.reason() == sl::stop_reason::none);
  }
}

TEMPLATE_TEST_CASE("Keras' early-stopping tests", "[stability][early_stop][peers]", float, double) {
  using T = TestType;
  SECTION("test_early_stopping_patience: stopped_epoch == max(patience, 1) + 2") {
    const std::vector<double> losses{10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5};
    for (int patience : {0, 1, 2, 3}) {
      sl::EarlyStopper<T> stopper({.patience = patience, .min_delta = 0.0});
      CHECK(stop_step(stopper, losses) == std::max(patience, 1) + 2);
    }
  }
  SECTION("test_early_stopping_final_weights_when_restoring_model_weights") {
    sl::EarlyStopper<T> stopper({.patience = 2, .min_delta = 0.0});
    CHECK(stop_step(stopper, {0.2, 0.15, 0.1, 0.11, 0.12}) == 4);
    CHECK(stopper.best_step() == 2);  // the weights restored are epoch 2's
    // No epoch beats the baseline: 5 epochs run and epoch 2's weights are restored.
    sl::EarlyStopper<T> baseline({.patience = 5, .min_delta = 0.0, .baseline = 0.5, .baseline_gates_wait = true});
    CHECK(stop_step(baseline, {0.9, 0.8, 0.7, 0.71, 0.72, 0.73}) == 4);
    CHECK(baseline.best_step() == 2);
    // Another callback stops at epoch 3: the best so far is still epoch 2.
    sl::EarlyStopper<T> interrupted({.patience = 5, .min_delta = 0.0, .baseline = 0.5, .baseline_gates_wait = true});
    CHECK(stop_step(interrupted, {0.9, 0.8, 0.7, 0.71}) == -1);
    CHECK(interrupted.best_step() == 2);
  }
  SECTION("test_early_stopping_with_start_from_epoch: at least patience + start_from epochs") {
    // Keras trains a model there; a flat metric is the case that stops soonest.
    sl::EarlyStopper<T> stopper({.patience = 3, .min_delta = 0.0, .start_from = 2});
    const long long stop = stop_step(stopper, std::vector<double>(20, 0.5));
    CHECK(stop + 1 >= 3 + 2);
    CHECK(stop == 5);
    sl::EarlyStopper<T> no_patience({.patience = 0, .min_delta = 0.0, .start_from = 2});
    const long long stop0 = stop_step(no_patience, std::vector<double>(20, 0.5));
    CHECK(stop0 + 1 >= 2);
    CHECK(stop0 == 3);
  }
}

TEST_CASE("ignite's early-stopping tests", "[stability][early_stop][peers]") {
  SECTION("test_simple_early_stopping") {
    sl::EarlyStopper<double> stopper(ignite(2));
    CHECK(stop_step(stopper, {1.0, 0.8, 0.88}) == 2);
  }
  SECTION("test_state_dict: the state moves to a new handler after the first call") {
    sl::EarlyStopper<double> first(ignite(2));
    CHECK_FALSE(first.update(1.0).should_stop);
    sl::EarlyStopper<double> second(ignite(2));
    sl::restore_state(second, sl::save_state(first));
    CHECK_FALSE(second.update(0.8).should_stop);
    CHECK(second.update(0.88).should_stop);
  }
  SECTION("test_state_dict_with_mode: rel, restored after two calls") {
    sl::EarlyStopper<double> first(ignite(2, 0.1, true));
    first.update(1.0);
    first.update(2.0);
    sl::EarlyStopper<double> second(ignite(2, 0.1, true));
    sl::restore_state(second, sl::save_state(first));
    const auto a = second.update(2.1);  // 2.1 <= 2.0 * 1.1
    CHECK(a.wait == 1);
    CHECK_FALSE(a.should_stop);
    const auto b = second.update(2.2);
    CHECK(b.wait == 2);
    CHECK(b.should_stop);
  }
  SECTION("test_early_stopping_on_threshold") {
    sl::EarlyStopper<double> stopper(ignite(2, 0.1));
    const std::vector<double> scores{1.0, 2.0, 2.01, 3.0, 3.01, 3.02};
    const std::vector<long long> counter{0, 0, 1, 0, 1, 2};
    for (std::size_t i = 0; i < scores.size(); ++i) {
      const auto d = stopper.update(scores[i]);
      CHECK(d.wait == counter[i]);
      CHECK(d.should_stop == (i == 5));
    }
  }
  SECTION("test_early_stopping_on_rel_delta") {
    sl::EarlyStopper<double> stopper(ignite(2, 0.1, true));
    const std::vector<double> scores{1.0, 2.0, 2.1, 3.0, 3.2, 3.25};
    const std::vector<long long> counter{0, 0, 1, 0, 1, 2};
    for (std::size_t i = 0; i < scores.size(); ++i) {
      const auto d = stopper.update(scores[i]);
      CHECK(d.wait == counter[i]);
      CHECK(d.should_stop == (i == 5));
    }
  }
  SECTION("test_early_stopping_on_last_event_threshold and test_early_stopping_on_cumulative") {
    sl::EarlyStopper<double> last_event(ignite(2, 0.4, false, false));
    CHECK(stop_step(last_event, {0.0, 0.3, 0.6}) == 2);
    sl::EarlyStopper<double> cumulative(ignite(2, 0.4, false, true));
    CHECK(stop_step(cumulative, {0.0, 0.3, 0.6}) == -1);
    CHECK(cumulative.wait() == 0);
  }
  SECTION("test_simple_early_stopping_on_plateau and test_with_engine_early_stopping_on_plateau") {
    sl::EarlyStopper<double> stopper(ignite(1));
    CHECK(stop_step(stopper, {42, 42}) == 1);
    sl::EarlyStopper<double> engine(ignite(4));
    CHECK(stop_step(engine, std::vector<double>(10, 0.047)) == 4);  // trainer.state.epoch == 5
  }
  SECTION("test_simple_no_early_stopping") {
    sl::EarlyStopper<double> stopper(ignite(2));
    CHECK(stop_step(stopper, {1.0, 0.8, 1.2}) == -1);
  }
  SECTION("test_with_engine_early_stopping (and its distributed twin)") {
    sl::EarlyStopper<double> stopper(ignite(3));
    CHECK(stop_step(stopper, {1.0, 0.8, 1.2, 1.5, 0.9, 1.0, 0.99, 1.1, 0.9}) == 6);  // epoch 7
  }
  SECTION("test_with_engine_no_early_stopping") {
    sl::EarlyStopper<double> stopper(ignite(5));
    CHECK(stop_step(stopper, {1.0, 0.8, 1.2, 1.23, 0.9, 1.0, 1.1, 1.253, 1.26, 1.2}) == -1);
  }
  SECTION("test_simple_early_stopping_min_mode") {
    sl::EarlyStopper<double> stopper(ignite(2, 0.0, false, false, sl::stop_mode::min));
    CHECK(stop_step(stopper, {1.0, 1.2, 0.9}) == -1);
  }
  SECTION("test_early_stopping_min_mode_with_delta, _with_threshold_cumulative, _rel_delta") {
    for (bool cumulative : {false, true}) {
      sl::EarlyStopper<double> stopper(ignite(2, 0.1, false, cumulative, sl::stop_mode::min));
      CHECK(stop_step(stopper, {1.1, 0.95, 0.94, 0.93}) == 3);
    }
    sl::EarlyStopper<double> relative(ignite(2, 0.1, true, false, sl::stop_mode::min));
    CHECK(stop_step(relative, {1.0, 0.8, 0.79, 0.78}) == 3);
  }
}
