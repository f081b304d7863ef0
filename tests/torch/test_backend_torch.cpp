// The LibTorch adapter (steadyloss/backend/torch.hpp): values and gradients against
// torch::nn::functional and torch autograd, masked/length means against the same built from torch
// ops, composed losses against torch sums of weighted terms, float64 central differences, and the
// error messages. CPU tensors (Debian's libtorch-dev 1.13); the same checks run on CUDA tensors
// from tests/gpu/run.sh, which sets STEADYLOSS_TEST_DEVICE=cuda.
#include <torch/torch.h>
// LibTorch's headers bring glog's CHECK (abort on failure, not counted by Catch); Catch's must win.
#undef CHECK
#include <catch2/catch.hpp>

#include <steadyloss/backend/torch.hpp>
#include <steadyloss/presets.hpp>
#include <steadyloss/steadyloss.hpp>

#include <bit>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

namespace sl = steadyloss;
namespace F = torch::nn::functional;

namespace {

torch::Device test_device() {
  const char* name = std::getenv("STEADYLOSS_TEST_DEVICE");
  return name != nullptr && std::string(name) == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}

template <class T>
torch::Dtype dtype_of() {
  return std::is_same_v<T, float> ? torch::kFloat32 : torch::kFloat64;
}

template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 2e-6 : 1e-12;
}

template <class T>
torch::TensorOptions options_of() {
  return torch::TensorOptions().dtype(dtype_of<T>()).device(test_device());
}

/// Relative + absolute closeness of two tensors (any device), with the worst element reported.
void require_close(const torch::Tensor& actual, const torch::Tensor& expected, double rel, const char* what) {
  INFO(what);
  REQUIRE(actual.sizes() == expected.sizes());
  const auto a = actual.detach().to(torch::kCPU, torch::kFloat64);
  const auto e = expected.detach().to(torch::kCPU, torch::kFloat64);
  const auto error = (a - e).abs() - rel * e.abs();
  const double worst = error.max().item<double>();
  INFO("worst excess error " << worst << ", max |expected| " << e.abs().max().item<double>());
  REQUIRE(worst <= rel);
}

/// pred values spanning Huber's both branches and logits up to +-8.
template <class T>
torch::Tensor random_pred(std::vector<std::int64_t> shape, std::uint64_t seed) {
  torch::manual_seed(seed);
  return (torch::randn(shape, torch::dtype(torch::kFloat64)) * 3.0).to(options_of<T>());
}

template <class T>
torch::Tensor binary_target(std::vector<std::int64_t> shape, std::uint64_t seed) {
  torch::manual_seed(seed);
  return (torch::rand(shape, torch::dtype(torch::kFloat64)) < 0.2).to(options_of<T>());
}

/// Runs `ours` and `reference` on the same pred (each a fresh leaf) and compares value and grad.
template <class Ours, class Reference>
void compare_with_autograd(const torch::Tensor& pred, Ours ours, Reference reference, double rel) {
  const auto p1 = pred.detach().clone().set_requires_grad(true);
  const auto p2 = pred.detach().clone().set_requires_grad(true);
  const torch::Tensor a = ours(p1);
  const torch::Tensor b = reference(p2);
  REQUIRE(a.dim() == 0);
  REQUIRE(a.scalar_type() == p1.scalar_type());
  require_close(a, b, rel, "value");
  a.backward();
  b.backward();
  require_close(p1.grad(), p2.grad(), rel, "gradient");
}

}  // namespace

TEMPLATE_TEST_CASE("torch huber matches huber_loss with delta", "", float, double) {
  using T = TestType;
  const auto pred = random_pred<T>({6, 37, 5}, 1);
  const auto target = random_pred<T>({6, 37, 5}, 2);
  for (const double delta : {0.5, 1.0, 2.5}) {
    INFO("delta " << delta);
    compare_with_autograd(
        pred, [&](const torch::Tensor& p) { return sl::torch::loss(sl::Huber<T>{.delta = T(delta)}, p, target); },
        [&](const torch::Tensor& p) {
          return F::huber_loss(p, target, F::HuberLossFuncOptions().delta(delta));
        },
        tolerance<T>());
    compare_with_autograd(
        pred,
        [&](const torch::Tensor& p) {
          return sl::torch::loss(sl::term(sl::Huber<T>{.delta = T(delta)}, T(1), sl::Reduction::sum), p, target);
        },
        [&](const torch::Tensor& p) {
          return F::huber_loss(p, target, F::HuberLossFuncOptions().delta(delta).reduction(torch::kSum));
        },
        tolerance<T>());
  }
}

TEMPLATE_TEST_CASE("torch balanced BCE matches binary_cross_entropy_with_logits with pos_weight", "", float, double) {
  using T = TestType;
  const auto logits = random_pred<T>({4, 300}, 3);
  const auto target = binary_target<T>({4, 300}, 4);
  for (const double pos_weight : {1.0, 5.0, 0.3}) {
    INFO("pos_weight " << pos_weight);
    const auto options = F::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(
        torch::full({1}, pos_weight, options_of<T>()));
    compare_with_autograd(
        logits,
        [&](const torch::Tensor& x) {
          return sl::torch::loss(sl::BalancedBCE<T>{.pos_weight = T(pos_weight)}, x, target);
        },
        [&](const torch::Tensor& x) { return F::binary_cross_entropy_with_logits(x, target, options); },
        4 * tolerance<T>());
  }
}

TEMPLATE_TEST_CASE("torch label smoothing matches BCE on smoothed targets", "", float, double) {
  using T = TestType;
  const auto logits = random_pred<T>({3, 211}, 5);
  const auto target = binary_target<T>({3, 211}, 6);
  const double eps = 0.05, pos_weight = 5.0;
  const auto smoothed = target * (1 - eps) + eps / 2;  // Keras' rule, worked by hand
  const auto options = F::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(
      torch::full({1}, pos_weight, options_of<T>()));
  compare_with_autograd(
      logits,
      [&](const torch::Tensor& x) {
        return sl::torch::loss(sl::LabelSmoothing{sl::BalancedBCE<T>{.pos_weight = T(pos_weight)}, T(eps)}, x, target);
      },
      [&](const torch::Tensor& x) { return F::binary_cross_entropy_with_logits(x, smoothed, options); },
      4 * tolerance<T>());
}

TEMPLATE_TEST_CASE("torch L1 and MSE match l1_loss and mse_loss", "", float, double) {
  using T = TestType;
  const auto pred = random_pred<T>({1000}, 7);
  const auto target = random_pred<T>({1000}, 8);
  compare_with_autograd(
      pred, [&](const torch::Tensor& p) { return sl::torch::loss(sl::L1<T>{}, p, target); },
      [&](const torch::Tensor& p) { return F::l1_loss(p, target); }, tolerance<T>());
  compare_with_autograd(
      pred, [&](const torch::Tensor& p) { return sl::torch::loss(sl::MSE<T>{}, p, target); },
      [&](const torch::Tensor& p) { return F::mse_loss(p, target); }, tolerance<T>());
  compare_with_autograd(
      pred, [&](const torch::Tensor& p) { return sl::torch::loss(sl::term(sl::MSE<T>{}, T(2.5)), p, target); },
      [&](const torch::Tensor& p) { return 2.5 * F::mse_loss(p, target); }, tolerance<T>());
}

TEMPLATE_TEST_CASE("torch frame mask and lengths give the weighted mean built from torch ops", "", float, double) {
  using T = TestType;
  const std::int64_t batch = 4, frames = 23, bins = 7;
  const auto pred = random_pred<T>({batch, frames, bins}, 9);
  const auto target = random_pred<T>({batch, frames, bins}, 10);
  const std::vector<std::int64_t> lengths{23, 11, 1, 17};
  const auto frame_index = torch::arange(frames, torch::kLong).unsqueeze(0);
  const auto length_mask = (frame_index < torch::tensor(lengths).unsqueeze(1)).to(options_of<T>());  // [B, T]
  // Padding holds NaN: a dropped element must not leak into the value or the gradient.
  const auto padded_pred = pred.masked_fill(length_mask.unsqueeze(-1).logical_not(), NAN);
  const auto huber_none = F::HuberLossFuncOptions().delta(1.0).reduction(torch::kNone);
  auto reference = [&](const torch::Tensor& p) {
    const auto kept = length_mask.unsqueeze(-1).expand_as(p).to(torch::kBool);
    const auto elementwise = F::huber_loss(p.masked_fill(kept.logical_not(), 0.0), target, huber_none);
    return (elementwise * length_mask.unsqueeze(-1)).sum() / (length_mask.sum() * bins);
  };
  SECTION("lengths tensor") {
    compare_with_autograd(
        padded_pred,
        [&](const torch::Tensor& p) {
          return sl::torch::loss(sl::Huber<T>{}, p, target, sl::torch::lengths(torch::tensor(lengths)));
        },
        reference, tolerance<T>());
  }
  SECTION("lengths vector") {
    compare_with_autograd(
        padded_pred, [&](const torch::Tensor& p) { return sl::torch::loss(sl::Huber<T>{}, p, target, sl::torch::lengths(lengths)); },
        reference, tolerance<T>());
  }
  SECTION("bool frame mask") {
    compare_with_autograd(
        padded_pred,
        [&](const torch::Tensor& p) { return sl::torch::loss(sl::Huber<T>{}, p, target, length_mask.to(torch::kBool)); },
        reference, tolerance<T>());
  }
  SECTION("weighted per-element mask") {
    torch::manual_seed(11);
    const auto weights = torch::rand({batch, frames, bins}, torch::kFloat64).to(options_of<T>());
    compare_with_autograd(
        pred, [&](const torch::Tensor& p) { return sl::torch::loss(sl::Huber<T>{}, p, target, weights); },
        [&](const torch::Tensor& p) { return (F::huber_loss(p, target, huber_none) * weights).sum() / weights.sum(); },
        tolerance<T>());
  }
}

TEMPLATE_TEST_CASE("torch composed loss equals the torch sum of weighted terms", "", float, double) {
  using T = TestType;
  const std::int64_t batch = 3, frames = 31, bins = 8;
  const auto mel_pred = random_pred<T>({batch, frames, bins}, 12);
  const auto mel_target = random_pred<T>({batch, frames, bins}, 13);
  const auto stop_logits = random_pred<T>({batch, frames}, 14);
  const auto stop_target = binary_target<T>({batch, frames}, 15);
  const std::vector<int> lengths{31, 20, 9};
  const auto mask = (torch::arange(frames).unsqueeze(0) < torch::tensor(std::vector<std::int64_t>{31, 20, 9}).unsqueeze(1))
                        .to(options_of<T>());
  const T eps = T(0.05), pos_weight = T(5);
  auto loss = sl::compose(sl::term(sl::Huber<T>{.delta = T(1)}, T(35)),
                          sl::term(sl::LabelSmoothing{sl::BalancedBCE<T>{.pos_weight = pos_weight}, eps}, T(1)));
  const std::array<T, 2> multipliers{T(0.8), T(1.2)};
  loss.set_multipliers(multipliers);

  const auto m1 = mel_pred.clone().set_requires_grad(true), s1 = stop_logits.clone().set_requires_grad(true);
  const auto out = sl::torch::evaluate(loss, sl::torch::inputs(m1, mel_target, sl::torch::lengths(lengths)),
                                       sl::torch::inputs(s1, stop_target, sl::torch::lengths(lengths)));
  out.total.backward();

  const auto m2 = mel_pred.clone().set_requires_grad(true), s2 = stop_logits.clone().set_requires_grad(true);
  const auto mel = (F::huber_loss(m2, mel_target, F::HuberLossFuncOptions().reduction(torch::kNone)) * mask.unsqueeze(-1))
                       .sum() / (mask.sum() * bins);
  const auto bce_options = F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kNone).pos_weight(
      torch::full({1}, double(pos_weight), options_of<T>()));
  const auto stop = (F::binary_cross_entropy_with_logits(s2, stop_target * (1 - eps) + eps / 2, bce_options) * mask)
                        .sum() / mask.sum();
  const auto expected = 35.0 * 0.8 * mel + 1.0 * 1.2 * stop;
  expected.backward();

  const double rel = 4 * tolerance<T>();
  require_close(out.total, expected, rel, "total");
  require_close(m1.grad(), m2.grad(), rel, "mel gradient");
  require_close(s1.grad(), s2.grad(), rel, "stop gradient");
  CHECK(out.result.values[0] == Approx(mel.template item<double>()).epsilon(rel));
  CHECK(out.result.values[1] == Approx(stop.template item<double>()).epsilon(rel));
  CHECK(out.result.weights[0] == Approx(35.0 * 0.8));
  CHECK(out.result.weights[1] == Approx(1.2));
  CHECK(out.result.denominators[0] == 60.0 * bins);
  CHECK(out.result.denominators[1] == 60.0);
  CHECK(sl::torch::loss(loss, sl::torch::inputs(mel_pred, mel_target, sl::torch::lengths(lengths)),
                        sl::torch::inputs(stop_logits, stop_target, sl::torch::lengths(lengths)))
            .template item<double>() == Approx(out.total.template item<double>()));
}

TEST_CASE("torch gradients match float64 central differences") {
  // Finite differences of the value path itself: (L(x + h e_i) - L(x - h e_i)) / 2h per element.
  const auto options = options_of<double>();
  torch::manual_seed(16);
  const auto pred = torch::randn({3, 5, 2}, options) * 2.0;
  const auto target = torch::randn({3, 5, 2}, options);
  const auto labels = (torch::rand({3, 5, 2}, options) < 0.3).to(torch::kFloat64);
  const auto mask = torch::tensor({1.0, 0.5, 0.0, 2.0, 1.0, 1.0, 0.0, 0.0, 3.0, 1.0, 1.0, 1.0, 0.25, 1.0, 1.0}, options)
                        .reshape({3, 5});
  auto check = [&](const char* name, auto term, const torch::Tensor& y, const torch::Tensor& weights) {
    INFO(name);
    auto evaluate = [&](const torch::Tensor& p) { return sl::torch::loss(term, p, y, weights); };
    const auto x = pred.clone().set_requires_grad(true);
    evaluate(x).backward();
    const auto analytic = x.grad().to(torch::kCPU);
    const double h = 1e-6;
    auto flat = pred.clone().reshape({-1});
    for (std::int64_t i = 0; i < flat.numel(); ++i) {
      const double original = flat[i].item<double>();
      flat[i] = original + h;
      const double up = evaluate(flat.reshape(pred.sizes())).template item<double>();
      flat[i] = original - h;
      const double down = evaluate(flat.reshape(pred.sizes())).template item<double>();
      flat[i] = original;
      const double numeric = (up - down) / (2 * h);
      INFO("element " << i);
      CHECK(analytic.reshape({-1})[i].item<double>() == Approx(numeric).epsilon(1e-6).margin(1e-8));
    }
  };
  check("Huber", sl::Huber<double>{.delta = 0.7}, target, mask);
  check("L1", sl::L1<double>{}, target, mask);
  check("MSE sum", sl::term(sl::MSE<double>{}, 3.0, sl::Reduction::sum), target, mask);
  check("BalancedBCE", sl::BalancedBCE<double>{.pos_weight = 5.0}, labels, mask);
  check("LabelSmoothing", sl::LabelSmoothing{sl::BalancedBCE<double>{.pos_weight = 2.0}, 0.1}, labels, mask);
}

TEST_CASE("torch backward scales the saved gradient by the incoming gradient") {
  const auto pred = random_pred<float>({64}, 17).set_requires_grad(true);
  const auto target = random_pred<float>({64}, 18);
  const auto value = sl::torch::loss(sl::Huber<float>{}, pred, target);
  value.backward({}, /*retain_graph=*/true);
  const auto once = pred.grad().clone();
  pred.grad().zero_();
  (3.0f * value).backward({}, /*retain_graph=*/true);  // incoming gradient 3
  require_close(pred.grad(), 3.0f * once, 1e-6, "3 x gradient");
  pred.grad().zero_();
  value.backward();  // the saved gradient survived the in-place zeroing of .grad above
  require_close(pred.grad(), once, 1e-6, "retained gradient");
}

TEST_CASE("torch pred flows through a graph and through non-contiguous views") {
  torch::manual_seed(19);
  const auto weight = torch::randn({5, 7}, options_of<float>()).set_requires_grad(true);
  const auto input = torch::randn({7, 5}, options_of<float>());
  const auto target = torch::randn({5, 5}, options_of<float>());
  // input.t() is a transposed (non-contiguous) view: copied to a contiguous temporary inside.
  const auto pred = torch::matmul(weight, input).t();
  REQUIRE_FALSE(pred.is_contiguous());
  sl::torch::loss(sl::Huber<float>{}, pred, target).backward();
  const auto w2 = weight.detach().clone().set_requires_grad(true);
  F::huber_loss(torch::matmul(w2, input).t(), target).backward();
  require_close(weight.grad(), w2.grad(), 2e-6, "weight gradient through matmul and transpose");
}

TEST_CASE("torch without grad computes the value only") {
  const auto pred = random_pred<float>({100}, 20).set_requires_grad(true);
  const auto target = random_pred<float>({100}, 21);
  torch::Tensor value;
  {
    torch::NoGradGuard no_grad;
    value = sl::torch::loss(sl::MSE<float>{}, pred, target);
  }
  CHECK_FALSE(value.requires_grad());
  CHECK(value.item<double>() == Approx(F::mse_loss(pred, target).item<double>()).epsilon(1e-6));
  const auto detached = sl::torch::loss(sl::MSE<float>{}, pred.detach(), target);
  CHECK_FALSE(detached.requires_grad());
}

TEST_CASE("torch reductions are read back from a composed loss") {
  const auto loss = sl::compose(sl::term(sl::Huber<float>{}, 2.0f, sl::Reduction::sum), sl::term(sl::MSE<float>{}, 1.0f),
                                sl::term(sl::BalancedBCE<float>{}, 1.0f, sl::Reduction::sum));
  const auto reductions = sl::torch::detail::reductions_of(loss);
  CHECK(reductions[0] == sl::Reduction::sum);
  CHECK(reductions[1] == sl::Reduction::mean);
  CHECK(reductions[2] == sl::Reduction::sum);
}

TEST_CASE("torch tensors work with the core API through tensor_traits") {
  const auto pred = torch::randn({4, 9});
  const auto target = torch::randn({4, 9});
  auto grad = torch::empty({4, 9});
  const auto r = sl::evaluate(sl::Huber<float>{}, sl::inputs(pred, target), grad);
  CHECK(r.value == Approx(F::huber_loss(pred, target).item<double>()).epsilon(1e-6));
  const auto p = pred.clone().set_requires_grad(true);
  F::huber_loss(p, target).backward();
  require_close(grad, p.grad(), 1e-6, "core gradient into a torch tensor");

  const auto pred64 = pred.to(torch::kFloat64), target64 = target.to(torch::kFloat64);
  const auto v = sl::value(sl::MSE<double>{}, sl::inputs(sl::torch::span<const double>(pred64),
                                                         sl::torch::span<const double>(target64)));
  CHECK(v.value == Approx(F::mse_loss(pred64, target64).item<double>()).epsilon(1e-12));

  const auto transposed = pred.t();
  CHECK_THROWS_WITH(sl::value(sl::MSE<float>{}, sl::inputs(transposed, target)),
                    Catch::Contains("not contiguous"));
  const auto doubles = pred.to(torch::kFloat64);
  CHECK_THROWS_WITH(sl::value(sl::MSE<float>{}, sl::inputs(doubles, doubles)), Catch::Contains("dtype Double"));
}

TEST_CASE("torch errors name the argument") {
  const auto pred = torch::randn({4, 6});
  const auto target = torch::randn({4, 6});
  using Catch::Contains;
  SECTION("dtype") {
    CHECK_THROWS_AS(sl::torch::loss(sl::Huber<float>{}, pred.to(torch::kFloat64), target.to(torch::kFloat64)),
                    c10::Error);
    CHECK_THROWS_WITH(sl::torch::loss(sl::Huber<float>{}, pred.to(torch::kFloat64), target.to(torch::kFloat64)),
                      Contains("pred of term 0 has dtype Double; this term needs float32"));
    CHECK_THROWS_WITH(sl::torch::loss(sl::Huber<double>{}, pred, target), Contains("needs float64"));
    CHECK_THROWS_WITH(sl::torch::loss(sl::Huber<float>{}, pred, target.to(torch::kFloat64)),
                      Contains("target of term 0 has dtype Double but pred has Float"));
    CHECK_THROWS_WITH(sl::torch::loss(sl::Huber<float>{}, pred.to(torch::kInt), target.to(torch::kInt)),
                      Contains("pred of term 0 has dtype Int"));
  }
  SECTION("shape") {
    CHECK_THROWS_WITH(sl::torch::loss(sl::Huber<float>{}, pred, target.reshape({6, 4})),
                      Contains("target of term 0 has shape [6, 4] but pred has shape [4, 6]"));
    CHECK_THROWS_WITH(sl::torch::loss(sl::Huber<float>{}, pred, target, torch::ones({6})),
                      Contains("mask of term 0 has shape [6]"));
    CHECK_THROWS_WITH(sl::torch::loss(sl::Huber<float>{}, pred, target, sl::torch::lengths(std::vector<int>{1, 2, 3})),
                      Contains("lengths of term 0 has 3 entries but pred has shape [4, 6]"));
    CHECK_THROWS_WITH(sl::torch::loss(sl::Huber<float>{}, torch::empty({0}), torch::empty({0})),
                      Contains("pred of term 0 is empty"));
  }
  SECTION("device") {
    const auto meta = torch::empty({4, 6}, torch::device(torch::kMeta));
    CHECK_THROWS_WITH(sl::torch::loss(sl::Huber<float>{}, pred, meta), Contains("target of term 0 is on meta but pred is on cpu"));
    CHECK_THROWS_WITH(sl::torch::loss(sl::Huber<float>{}, meta, meta), Contains("pred of term 0 is on meta"));
  }
  SECTION("composed: the term index and the mask dtype") {
    const auto loss = sl::compose(sl::Huber<float>{}, sl::MSE<float>{});
    CHECK_THROWS_WITH(sl::torch::loss(loss, sl::torch::inputs(pred, target),
                                      sl::torch::inputs(pred, target, torch::ones({4}, torch::kInt))),
                      Contains("mask of term 1 has dtype Int"));
    CHECK_THROWS_WITH(sl::torch::loss(loss, sl::torch::inputs(pred, target), sl::torch::inputs(pred, target.t())),
                      Contains("target of term 1 has shape [6, 4]"));
  }
  SECTION("target requires grad") {
    CHECK_THROWS_WITH(sl::torch::loss(sl::Huber<float>{}, pred, target.clone().set_requires_grad(true)),
                      Contains("target of term 0 requires grad"));
  }
  SECTION("core errors stay steadyloss errors") {
    CHECK_THROWS_AS(sl::torch::loss(sl::Huber<float>{.delta = -1.0f}, pred, target), sl::invalid_parameter);
    CHECK_THROWS_WITH(sl::torch::loss(sl::BalancedBCE<float>{}, pred, torch::full({4, 6}, 1.5f)),
                      Contains("targets must lie in [0, 1]"));
    CHECK_THROWS_AS(sl::torch::loss(sl::Huber<float>{}, pred, target, torch::zeros({4})), sl::invalid_input);
    CHECK_THROWS_AS(sl::torch::loss(sl::Huber<float>{}, pred, target, sl::torch::lengths(std::vector<int>{1, 2, 7, 0})),
                    sl::invalid_input);
  }
}

TEST_CASE("torch masks: subnormal weights and an overflowing gradient scale are errors on every device") {
  // On CUDA the mask's sum is on the device, so the gradient-scale check runs there and is
  // reported after the copy back; before it, CUDA wrote Inf gradients where the CPU threw.
  using Catch::Contains;
  const float smallest = std::numeric_limits<float>::min();
  const auto pred = random_pred<float>({4, 6, 3}, 31);
  const auto target = random_pred<float>({4, 6, 3}, 32);
  auto mask = torch::ones({4, 6}, options_of<float>());
  mask.index_put_({1, 2}, std::numeric_limits<float>::denorm_min());
  CHECK_THROWS_AS(sl::torch::loss(sl::Huber<float>{}, pred, target, mask), sl::invalid_input);
  CHECK_THROWS_WITH(sl::torch::loss(sl::Huber<float>{}, pred, target, mask), Contains("subnormal"));

  // Per element: 1e5 / (72 x the smallest normal float) overflows float.
  const auto heavy = sl::term(sl::Huber<float>{}, 1e5f);
  const auto tiny = torch::full({4, 6, 3}, smallest, options_of<float>());
  const auto p = pred.clone().set_requires_grad(true);
  CHECK_THROWS_AS(sl::torch::loss(heavy, p, target, tiny), sl::invalid_input);
  CHECK_THROWS_WITH(sl::torch::loss(heavy, p, target, tiny), Contains("gradient scale") && Contains("overflows"));
  {
    torch::NoGradGuard value_only;  // no gradient, no factor: the weighted mean is the plain mean
    const double want = 1e5 * F::huber_loss(pred.to(torch::kFloat64), target.to(torch::kFloat64)).item<double>();
    CHECK(sl::torch::loss(heavy, pred, target, tiny).item<double>() == Approx(want).epsilon(tolerance<float>()));
  }

  // Per frame ([4, 6] over [4, 6, 3]): the CPU folds each frame's weight in double (factor
  // 1e5 / 72 fits); the CUDA kernel forms 1e5 / sum(w) in float first, so it refuses.
  const auto frames = torch::full({4, 6}, smallest, options_of<float>());
  if (test_device().is_cuda()) {
    CHECK_THROWS_WITH(sl::torch::loss(heavy, p, target, frames), Contains("gradient scale") && Contains("overflows"));
  } else {
    compare_with_autograd(
        pred, [&](const torch::Tensor& q) { return sl::torch::loss(heavy, q, target, frames); },
        [&](const torch::Tensor& q) { return 1e5 * F::huber_loss(q, target); }, tolerance<float>());
  }
}

TEST_CASE("torch evaluation is bitwise reproducible") {
  // On CUDA this exercises the deterministic reduction (fixed grid, fixed-order partials).
  const auto mel_pred = random_pred<float>({8, 400, 80}, 22), mel_target = random_pred<float>({8, 400, 80}, 23);
  const auto stop_logits = random_pred<float>({8, 400}, 24), stop_target = binary_target<float>({8, 400}, 25);
  const auto mask = (torch::rand({8, 400}) < 0.9).to(options_of<float>());
  const auto loss = sl::presets::stable_loss<float>();
  auto run = [&] {
    const auto m = mel_pred.clone().set_requires_grad(true), s = stop_logits.clone().set_requires_grad(true);
    const auto out = sl::torch::evaluate(loss, sl::torch::inputs(m, mel_target, mask), sl::torch::inputs(s, stop_target, mask));
    out.total.backward();
    return std::tuple{out.total.item<float>(), m.grad(), s.grad()};
  };
  const auto [total, mel_grad, stop_grad] = run();
  for (int repeat = 0; repeat < 3; ++repeat) {
    const auto [again, mel_again, stop_again] = run();
    CHECK(std::bit_cast<std::uint32_t>(again) == std::bit_cast<std::uint32_t>(total));
    CHECK(torch::equal(mel_again, mel_grad));
    CHECK(torch::equal(stop_again, stop_grad));
  }
}

TEST_CASE("torch half and bfloat16 run on CUDA only, computed in float") {
  const auto pred = random_pred<float>({4, 1000}, 26), target = random_pred<float>({4, 1000}, 27);
  for (const auto dtype : {torch::kFloat16, torch::kBFloat16}) {
    const auto p16 = pred.to(dtype), t16 = target.to(dtype);
    if (!p16.is_cuda()) {
      CHECK_THROWS_WITH(sl::torch::loss(sl::Huber<float>{}, p16, t16),
                        Catch::Contains("this term needs float32 (a float term; float64 needs a double term)"));
      continue;
    }
    // Reference: the same rounded inputs in float32 through torch; the value accumulates in
    // float, so only the gradient's rounding to 16 bits separates the two.
    const auto leaf = p16.clone().set_requires_grad(true);
    const auto value = sl::torch::loss(sl::Huber<float>{}, leaf, t16);
    value.backward();
    CHECK(value.scalar_type() == dtype);
    CHECK(leaf.grad().scalar_type() == dtype);
    const auto p32 = p16.to(torch::kFloat32).set_requires_grad(true);
    const auto expected = F::huber_loss(p32, t16.to(torch::kFloat32));
    expected.backward();
    require_close(value.to(torch::kFloat32), expected, 1e-2, "16-bit value");
    require_close(leaf.grad().to(torch::kFloat32), p32.grad(), 1e-2, "16-bit gradient");
  }
}
