// The spike-calibration harness: its streams match their closed forms, its tallies count what they
// claim on hand-made streams, and the study reader picks the right rows.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <numeric>
#include <string>

#include "calibration.hpp"

namespace cal = steadyloss::calibration;

TEST_CASE("lognormal batch noise has mean one and the stated log-space width") {
  const cal::batch_noise noise{cal::noise_shape::lognormal, 0.3};
  const cal::decay_curve flat{1.0, 1.0, 100};  // level 1 throughout
  const auto s = cal::clean_stream(noise, 200000, 42, flat);
  double sum = 0, log_sum = 0, log_square = 0;
  for (double x : s.loss) {
    sum += x;
    log_sum += std::log(x);
    log_square += std::log(x) * std::log(x);
  }
  const double n = double(s.loss.size());
  const double log_mean = log_sum / n;
  // E[exp(w z - w^2/2)] = 1; log noise ~ N(-w^2/2, w^2).
  CHECK(sum / n == Approx(1.0).epsilon(0.005));
  CHECK(log_mean == Approx(-0.045).margin(0.003));
  CHECK(std::sqrt(log_square / n - log_mean * log_mean) == Approx(0.3).epsilon(0.01));
  CHECK(std::none_of(s.bad.begin(), s.bad.end(), [](unsigned char b) { return b != 0; }));
}

TEST_CASE("the clean level decays to its floor with the stated time constant") {
  const auto s = cal::clean_stream({cal::noise_shape::lognormal, 0.1}, 1000, 1, {2.0, 0.5, 100});
  CHECK(s.level[0] == Approx(2.0));
  CHECK(s.level[100] == Approx(0.5 + 1.5 * std::exp(-1.0)));
  CHECK(s.level[999] == Approx(0.5).margin(1e-4));
}

TEST_CASE("injected runs sit at the multiple of the level, apart by the gap") {
  const auto clean = cal::clean_stream({cal::noise_shape::lognormal, 0.1}, 5000, 3);
  const cal::injection burst{"burst", 10, 3, 0.05, 20};
  const auto s = cal::inject(clean, burst, 9);
  std::size_t runs = 0, last_end = 0;
  for (std::size_t t = 0; t < s.loss.size(); ++t) {
    if (!s.bad[t]) {
      CHECK(s.loss[t] == clean.loss[t]);
      continue;
    }
    CHECK(s.loss[t] == 10 * s.level[t]);
    if (t == 0 || !s.bad[t - 1]) {  // a run starts: it is 3 long (or cut by the end) and apart from the last
      ++runs;
      CHECK(t >= last_end + 20);
      std::size_t end = t;
      while (end < s.loss.size() && s.bad[end]) ++end;
      CHECK((end - t == 3 || end == s.loss.size()));
      last_end = end;
    }
  }
  // A run starts with probability 0.05 at each allowed step: about 5000 / (20 + 3 + 20) runs.
  CHECK(runs > 80);
  CHECK(runs < 150);

  const auto nan = cal::inject(clean, {"NaN", std::numeric_limits<double>::quiet_NaN(), 1, 0.05, 20}, 9);
  for (std::size_t t = 0; t < nan.loss.size(); ++t) CHECK(std::isnan(nan.loss[t]) == bool(nan.bad[t]));
}

TEST_CASE("tallies: a flagged clean step is a false alarm, a bad one in warm-up a miss") {
  cal::loss_stream s{"hand", std::vector<double>(40, 1.0), std::vector<unsigned char>(40, 0), {}};
  s.loss[3] = 10;  // bad, during the 10-step warm-up: missed
  s.bad[3] = 1;
  s.loss[20] = 10;  // bad, after warm-up: 10 > 2 x mean 1
  s.bad[20] = 1;
  s.loss[25] = 3;   // clean but above 2 x 1: a false alarm
  s.loss[30] = std::numeric_limits<double>::quiet_NaN();  // bad and non-finite: always caught
  s.bad[30] = 1;
  const cal::detector_setting mean_2{"mean_ratio", 10, 0, 2.0, 0};
  const auto t = cal::score(mean_2, s);
  CHECK(t.bad == 3);
  CHECK(t.detected == 2);
  // 40 steps - 3 bad - 9 clean warm-up steps (the warm-up holds 10 accepted values; step 3 was one).
  CHECK(t.clean == 40 - 3 - 9);
  CHECK(t.false_alarms == 1);
  CHECK(t.false_alarm_rate() == Approx(1.0 / 28));
  CHECK(t.detection_rate() == Approx(2.0 / 3));

  // The same stream under a 5x median rule: the 3 is no longer flagged, the 10 still is.
  const auto median = cal::score({"median_ratio", 10, 0, 5.0, 0}, s);
  CHECK(median.false_alarms == 0);
  CHECK(median.detected == 2);
}

TEST_CASE("the study reader keeps one stream per seed of the asked configuration") {
  const std::string path = "calibration_study_test.csv";
  {
    std::ofstream out(path);
    out << "config,seed,step,train_loss_weighted,corrupted,other\n"
           "baseline,0,0,5,0,x\nstable,0,0,99,1,x\nbaseline,0,1,50,1,x\nbaseline,1,0,4,0,\nbaseline,1,1,nan,0,\n";
  }
  const auto streams = cal::read_study(path, "study p");
  std::remove(path.c_str());
  REQUIRE(streams.size() == 2);
  CHECK(streams[0].family == "study p");
  CHECK(streams[0].loss == std::vector<double>{5, 50});
  CHECK(streams[0].bad == std::vector<unsigned char>{0, 1});
  CHECK(streams[1].loss[0] == 4);
  CHECK(std::isnan(streams[1].loss[1]));
  CHECK_THROWS_WITH(cal::read_study("no/such/file.csv", "x"), Catch::Contains("cannot open"));
}
