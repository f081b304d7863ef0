// The README's 30-second example: a two-term TTS loss (mel regression + stop-token classifier)
// over a padded batch, evaluated in one fused pass per term.
#include <steadyloss/steadyloss.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

namespace sl = steadyloss;

int main() {
  const std::size_t batch = 4, max_frames = 100, mel_bins = 80;
  std::vector<int> lengths{100, 73, 58, 91};  // valid frames per sequence; the rest is padding

  std::vector<float> mel_pred(batch * max_frames * mel_bins), mel_target(mel_pred.size());
  std::vector<float> stop_logits(batch * max_frames), stop_target(stop_logits.size(), 0.0f);
  for (std::size_t i = 0; i < mel_pred.size(); ++i) {
    mel_pred[i] = std::sin(0.01f * static_cast<float>(i));
    mel_target[i] = std::sin(0.01f * static_cast<float>(i) + 0.2f);
  }
  for (std::size_t b = 0; b < batch; ++b) {
    for (std::size_t t = 0; t < max_frames; ++t) stop_logits[b * max_frames + t] = 0.1f * (static_cast<float>(t) - 60.0f);
    stop_target[b * max_frames + static_cast<std::size_t>(lengths[b]) - 1] = 1.0f;  // the last valid frame
  }

  // Structure fixed at compile time; weights are runtime values.
  auto loss = sl::compose(
      sl::term(sl::Huber<float>{.delta = 1.0f}, 35.0f),                                  // mel
      sl::term(sl::LabelSmoothing{sl::BalancedBCE<float>{.pos_weight = 5.0f}, 0.05f}, 1.0f));  // stop

  std::vector<float> d_mel(mel_pred.size()), d_stop(stop_logits.size());
  const auto r = loss.evaluate(sl::inputs(mel_pred, mel_target, sl::lengths(lengths, max_frames, mel_bins)),
                               sl::inputs(stop_logits, stop_target, sl::lengths(lengths, max_frames, 1)),
                               sl::grads(d_mel, d_stop));

  std::printf("mel (Huber)        %.6f  x weight %.1f\n", static_cast<double>(r.values[0]), static_cast<double>(r.weights[0]));
  std::printf("stop (BCE, LS)     %.6f  x weight %.1f\n", static_cast<double>(r.values[1]), static_cast<double>(r.weights[1]));
  std::printf("total              %.6f\n", static_cast<double>(r.total));
  std::printf("d_mel[0] = %.3e, d_stop in padding = %.1f\n", static_cast<double>(d_mel[0]),
              static_cast<double>(d_stop[max_frames - 1 + 2 * max_frames]));

  // Bad input is an exception naming what is wrong, never a silent NaN.
  try {
    std::vector<float> short_target(10);
    (void)sl::value(sl::Huber<float>{}, sl::inputs(mel_pred, short_target));
  } catch (const sl::shape_mismatch& e) {
    std::printf("as expected: %s\n", e.what());
  }
  return 0;
}
