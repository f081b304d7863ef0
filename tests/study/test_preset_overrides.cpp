// --set parsing and preset equality (examples/tts_stability/preset_overrides.hpp).
#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>

#include "preset_overrides.hpp"

namespace st = steadyloss::study;
namespace presets = steadyloss::presets;

TEST_CASE("set_fields overrides every listed field", "[study][overrides]") {
  presets::preset_config p{};
  st::set_fields(p,
                 "mel=adaptive_huber,huber_k=2.5,scale_factor=0.8,mel_weight=40,stop_pos_weight=3,label_smoothing=0.02,"
                 "stop_weight=2,adaptive_weights=1,weight_lo=0.8,weight_hi=1.2,smoothing=0.5,spike_detection=1,"
                 "spikes=skip,patience=7,min_delta=0.001,validation_smoothing=0.6,huber_delta=0.3");
  CHECK(p.mel == presets::mel_term::adaptive_huber);
  CHECK(p.huber_k == 2.5);
  CHECK(p.scale_factor == 0.8);
  CHECK(p.mel_weight == 40.0);
  CHECK(p.stop_pos_weight == 3.0);
  CHECK(p.label_smoothing == 0.02);
  CHECK(p.stop_weight == 2.0);
  CHECK(p.adaptive_weights);
  CHECK(p.weight_lo == 0.8);
  CHECK(p.weight_hi == 1.2);
  CHECK(p.smoothing == 0.5);
  CHECK(p.spike_detection);
  CHECK(p.spikes == steadyloss::spike_mode::skip);
  CHECK(p.patience == 7);
  CHECK(p.min_delta == 0.001);
  CHECK(p.validation_smoothing == 0.6);
  CHECK(p.huber_delta == 0.3);
  st::set_fields(p, "mel=huber,adaptive_weights=0,spike_detection=off,spikes=dampen,mel=l1");  // the later mel wins
  CHECK(p.mel == presets::mel_term::l1);
  CHECK_FALSE(p.adaptive_weights);
  CHECK_FALSE(p.spike_detection);
  CHECK(p.spikes == steadyloss::spike_mode::dampen);
}

TEST_CASE("set_fields rejects what it cannot read, naming the field", "[study][overrides]") {
  presets::preset_config p{};
  CHECK_THROWS_WITH(st::set_fields(p, "huber_k=abc"), Catch::Contains("huber_k") && Catch::Contains("abc"));
  CHECK_THROWS_WITH(st::set_fields(p, "no_such_field=1"), Catch::Contains("no_such_field"));
  CHECK_THROWS_AS(st::set_fields(p, "huber_k"), std::invalid_argument);
  CHECK_THROWS_AS(st::set_fields(p, "=1"), std::invalid_argument);
  CHECK_THROWS_AS(st::set_fields(p, "mel=mse"), std::invalid_argument);
  CHECK_THROWS_AS(st::set_fields(p, "spikes=report"), std::invalid_argument);  // report = spike_detection=0
  CHECK_THROWS_AS(st::set_fields(p, "adaptive_weights=2"), std::invalid_argument);
  CHECK_THROWS_AS(st::set_fields(p, "patience=2.5"), std::invalid_argument);
  CHECK_THROWS_AS(st::set_fields(p, "patience=-1"), std::invalid_argument);
  CHECK_THROWS_AS(st::set_fields(p, "huber_k=inf"), std::invalid_argument);
  CHECK_THROWS_AS(st::set_fields(p, "huber_k=1,"), std::invalid_argument);
}

TEST_CASE("preset_text reads back to the same preset", "[study][overrides]") {
  for (const auto& preset : {presets::baseline, presets::original, presets::stable}) {
    presets::preset_config copy{};
    st::set_fields(copy, st::preset_text(preset));
    CHECK(st::same_preset(copy, preset));
    CHECK(st::preset_text(copy) == st::preset_text(preset));
  }
  CHECK_FALSE(st::same_preset(presets::baseline, presets::original));
  presets::preset_config p = presets::baseline;
  p.min_delta = 1e-9;
  CHECK_FALSE(st::same_preset(p, presets::baseline));
}

TEST_CASE("same_behaviour ignores the fields the study's loop does not read", "[study][overrides]") {
  presets::preset_config a = presets::baseline, b = presets::baseline;  // L1, no spikes, no adaptive weights
  b.huber_delta = 0.2;       // only Huber reads it
  b.huber_k = 2.0;           // only AdaptiveHuber reads these two
  b.scale_factor = 0.5;
  b.weight_lo = 0.5;         // adaptive weights are off
  b.spikes = steadyloss::spike_mode::skip;  // spike detection is off
  b.smoothing = 0.9;         // no decision reads the smoothed training loss
  CHECK(st::same_behaviour(a, b));
  CHECK_FALSE(st::same_preset(a, b));
  b.mel = presets::mel_term::huber;  // now the delta matters
  a.mel = presets::mel_term::huber;
  CHECK_FALSE(st::same_behaviour(a, b));
  b.huber_delta = a.huber_delta;
  CHECK(st::same_behaviour(a, b));
  b.validation_smoothing = 0.3;  // the validation stopper reads this one
  CHECK_FALSE(st::same_behaviour(a, b));
}
