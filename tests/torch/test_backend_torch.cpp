// The LibTorch adapter (steadyloss/backend/torch.hpp): values and gradients against
// torch::nn::functional and torch autograd, masked/length means against the same built from torch
// ops, composed losses against torch sums of weighted terms, float64 central differences, and the
// error messages; the step helpers of steadyloss/backend/torch_step.hpp (grad_norm, apply,
// best_weights, frozen_copy) against float64 references worked by hand. CPU tensors (Debian's
// libtorch-dev 1.13); the same checks run on CUDA tensors from tests/gpu/run.sh, which sets
// STEADYLOSS_TEST_DEVICE=cuda.
#include <torch/torch.h>
// LibTorch's headers bring glog's CHECK (abort on failure, not counted by Catch); Catch's must win.
#undef CHECK
#include <catch2/catch.hpp>

#include <steadyloss/backend/torch.hpp>
#include <steadyloss/backend/torch_step.hpp>
#include <steadyloss/parallel.hpp>
#include <steadyloss/presets.hpp>
#include <steadyloss/steadyloss.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
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
        pred, [&](const torch::Tensor& p) { return sl::libtorch::loss(sl::Huber<T>{.delta = T(delta)}, p, target); },
        [&](const torch::Tensor& p) {
          return F::huber_loss(p, target, F::HuberLossFuncOptions().delta(delta));
        },
        tolerance<T>());
    compare_with_autograd(
        pred,
        [&](const torch::Tensor& p) {
          return sl::libtorch::loss(sl::term(sl::Huber<T>{.delta = T(delta)}, T(1), sl::reduction::sum), p, target);
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
          return sl::libtorch::loss(sl::BalancedBCE<T>{.pos_weight = T(pos_weight)}, x, target);
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
        return sl::libtorch::loss(sl::LabelSmoothing{sl::BalancedBCE<T>{.pos_weight = T(pos_weight)}, T(eps)}, x, target);
      },
      [&](const torch::Tensor& x) { return F::binary_cross_entropy_with_logits(x, smoothed, options); },
      4 * tolerance<T>());
}

TEMPLATE_TEST_CASE("torch L1 and MSE match l1_loss and mse_loss", "", float, double) {
  using T = TestType;
  const auto pred = random_pred<T>({1000}, 7);
  const auto target = random_pred<T>({1000}, 8);
  compare_with_autograd(
      pred, [&](const torch::Tensor& p) { return sl::libtorch::loss(sl::L1<T>{}, p, target); },
      [&](const torch::Tensor& p) { return F::l1_loss(p, target); }, tolerance<T>());
  compare_with_autograd(
      pred, [&](const torch::Tensor& p) { return sl::libtorch::loss(sl::MSE<T>{}, p, target); },
      [&](const torch::Tensor& p) { return F::mse_loss(p, target); }, tolerance<T>());
  compare_with_autograd(
      pred, [&](const torch::Tensor& p) { return sl::libtorch::loss(sl::term(sl::MSE<T>{}, T(2.5)), p, target); },
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
          return sl::libtorch::loss(sl::Huber<T>{}, p, target, sl::libtorch::lengths(torch::tensor(lengths)));
        },
        reference, tolerance<T>());
  }
  SECTION("lengths vector") {
    compare_with_autograd(
        padded_pred, [&](const torch::Tensor& p) { return sl::libtorch::loss(sl::Huber<T>{}, p, target, sl::libtorch::lengths(lengths)); },
        reference, tolerance<T>());
  }
  SECTION("bool frame mask") {
    compare_with_autograd(
        padded_pred,
        [&](const torch::Tensor& p) { return sl::libtorch::loss(sl::Huber<T>{}, p, target, length_mask.to(torch::kBool)); },
        reference, tolerance<T>());
  }
  SECTION("weighted per-element mask") {
    torch::manual_seed(11);
    const auto weights = torch::rand({batch, frames, bins}, torch::kFloat64).to(options_of<T>());
    compare_with_autograd(
        pred, [&](const torch::Tensor& p) { return sl::libtorch::loss(sl::Huber<T>{}, p, target, weights); },
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
  const auto out = sl::libtorch::evaluate(loss, sl::libtorch::inputs(m1, mel_target, sl::libtorch::lengths(lengths)),
                                          sl::libtorch::inputs(s1, stop_target, sl::libtorch::lengths(lengths)));
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
  CHECK(sl::libtorch::loss(loss, sl::libtorch::inputs(mel_pred, mel_target, sl::libtorch::lengths(lengths)),
                           sl::libtorch::inputs(stop_logits, stop_target, sl::libtorch::lengths(lengths)))
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
    auto evaluate = [&](const torch::Tensor& p) { return sl::libtorch::loss(term, p, y, weights); };
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
  check("MSE sum", sl::term(sl::MSE<double>{}, 3.0, sl::reduction::sum), target, mask);
  check("BalancedBCE", sl::BalancedBCE<double>{.pos_weight = 5.0}, labels, mask);
  check("LabelSmoothing", sl::LabelSmoothing{sl::BalancedBCE<double>{.pos_weight = 2.0}, 0.1}, labels, mask);
}

TEST_CASE("torch backward scales the saved gradient by the incoming gradient") {
  const auto pred = random_pred<float>({64}, 17).set_requires_grad(true);
  const auto target = random_pred<float>({64}, 18);
  const auto value = sl::libtorch::loss(sl::Huber<float>{}, pred, target);
  value.backward({}, /*retain_graph=*/true);
  const auto once = pred.grad().clone();
  pred.grad().zero_();
  (3.0f * value).backward({}, /*retain_graph=*/true);  // incoming gradient 3
  require_close(pred.grad(), 3.0f * once, 1e-6, "3 x gradient");
  pred.grad().zero_();
  value.backward();  // the saved gradient survived the in-place zeroing of .grad above
  require_close(pred.grad(), once, 1e-6, "retained gradient");
}

TEST_CASE("torch double backward throws steadyloss's message, the first-order gradient stays right") {
  using Catch::Matchers::Contains;
  const auto pred = random_pred<double>({5, 8}, 22).set_requires_grad(true);
  const auto target = random_pred<double>({5, 8}, 23);
  const auto reference_pred = pred.detach().clone().set_requires_grad(true);
  const auto reference = torch::autograd::grad({F::huber_loss(reference_pred, target)}, {reference_pred})[0];
  const auto value = sl::libtorch::loss(sl::Huber<double>{}, pred, target);
  const std::string message = "cannot be differentiated again";
  SECTION("torch::autograd::grad with create_graph, then a second grad") {
    const auto first = torch::autograd::grad({value}, {pred}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
    require_close(first, reference, 1e-12, "first-order gradient under create_graph");
    // Huber's true second derivative is 1 inside delta: a silent answer of 0 would be wrong.
    REQUIRE(first.requires_grad());
    CHECK_THROWS_WITH(torch::autograd::grad({first.sum()}, {pred}), Contains(message));
  }
  SECTION("an incoming gradient other than 1 (the multiplying path)") {
    const auto first = torch::autograd::grad({3.0 * value}, {pred}, {}, true, true)[0];
    require_close(first, 3.0 * reference, 1e-12, "3 x first-order gradient under create_graph");
    CHECK_THROWS_WITH(first.pow(2).sum().backward(), Contains(message));
  }
  SECTION("backward(create_graph) into .grad, then backward through .grad") {
    value.backward({}, /*retain_graph=*/true, /*create_graph=*/true);
    require_close(pred.grad(), reference, 1e-12, "accumulated first-order gradient");
    CHECK_THROWS_WITH(pred.grad().sum().backward(), Contains(message));
  }
  SECTION("without create_graph the gradient is a plain tensor, as before") {
    const auto first = torch::autograd::grad({value}, {pred})[0];
    CHECK_FALSE(first.requires_grad());
    require_close(first, reference, 1e-12, "first-order gradient");
  }
}

TEST_CASE("torch pred flows through a graph and through non-contiguous views") {
  torch::manual_seed(19);
  const auto weight = torch::randn({5, 7}, options_of<float>()).set_requires_grad(true);
  const auto input = torch::randn({7, 5}, options_of<float>());
  const auto target = torch::randn({5, 5}, options_of<float>());
  // input.t() is a transposed (non-contiguous) view: copied to a contiguous temporary inside.
  const auto pred = torch::matmul(weight, input).t();
  REQUIRE_FALSE(pred.is_contiguous());
  sl::libtorch::loss(sl::Huber<float>{}, pred, target).backward();
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
    value = sl::libtorch::loss(sl::MSE<float>{}, pred, target);
  }
  CHECK_FALSE(value.requires_grad());
  CHECK(value.item<double>() == Approx(F::mse_loss(pred, target).item<double>()).epsilon(1e-6));
  const auto detached = sl::libtorch::loss(sl::MSE<float>{}, pred.detach(), target);
  CHECK_FALSE(detached.requires_grad());
}

TEST_CASE("torch reductions are read back from a composed loss") {
  const auto loss = sl::compose(sl::term(sl::Huber<float>{}, 2.0f, sl::reduction::sum), sl::term(sl::MSE<float>{}, 1.0f),
                                sl::term(sl::BalancedBCE<float>{}, 1.0f, sl::reduction::sum));
  const auto reductions = sl::libtorch::detail::reductions_of(loss);
  CHECK(reductions[0] == sl::reduction::sum);
  CHECK(reductions[1] == sl::reduction::mean);
  CHECK(reductions[2] == sl::reduction::sum);
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
  const auto v = sl::value(sl::MSE<double>{}, sl::inputs(sl::libtorch::span<const double>(pred64),
                                                         sl::libtorch::span<const double>(target64)));
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
    CHECK_THROWS_AS(sl::libtorch::loss(sl::Huber<float>{}, pred.to(torch::kFloat64), target.to(torch::kFloat64)),
                       c10::Error);
    CHECK_THROWS_WITH(sl::libtorch::loss(sl::Huber<float>{}, pred.to(torch::kFloat64), target.to(torch::kFloat64)),
                         Contains("pred of term 0 has dtype Double; this term needs float32"));
    CHECK_THROWS_WITH(sl::libtorch::loss(sl::Huber<double>{}, pred, target), Contains("needs float64"));
    CHECK_THROWS_WITH(sl::libtorch::loss(sl::Huber<float>{}, pred, target.to(torch::kFloat64)),
                         Contains("target of term 0 has dtype Double but pred has Float"));
    CHECK_THROWS_WITH(sl::libtorch::loss(sl::Huber<float>{}, pred.to(torch::kInt), target.to(torch::kInt)),
                         Contains("pred of term 0 has dtype Int"));
  }
  SECTION("shape") {
    CHECK_THROWS_WITH(sl::libtorch::loss(sl::Huber<float>{}, pred, target.reshape({6, 4})),
                         Contains("target of term 0 has shape [6, 4] but pred has shape [4, 6]"));
    CHECK_THROWS_WITH(sl::libtorch::loss(sl::Huber<float>{}, pred, target, torch::ones({6})),
                         Contains("mask of term 0 has shape [6]"));
    CHECK_THROWS_WITH(sl::libtorch::loss(sl::Huber<float>{}, pred, target, sl::libtorch::lengths(std::vector<int>{1, 2, 3})),
                            Contains("lengths of term 0 has 3 entries but pred has shape [4, 6]"));
    CHECK_THROWS_WITH(sl::libtorch::loss(sl::Huber<float>{}, torch::empty({0}), torch::empty({0})),
                         Contains("pred of term 0 is empty"));
  }
  SECTION("device") {
    const auto meta = torch::empty({4, 6}, torch::device(torch::kMeta));
    CHECK_THROWS_WITH(sl::libtorch::loss(sl::Huber<float>{}, pred, meta), Contains("target of term 0 is on meta but pred is on cpu"));
    CHECK_THROWS_WITH(sl::libtorch::loss(sl::Huber<float>{}, meta, meta), Contains("pred of term 0 is on meta"));
  }
  SECTION("composed: the term index and the mask dtype") {
    const auto loss = sl::compose(sl::Huber<float>{}, sl::MSE<float>{});
    CHECK_THROWS_WITH(sl::libtorch::loss(loss, sl::libtorch::inputs(pred, target),
                                         sl::libtorch::inputs(pred, target, torch::ones({4}, torch::kInt))),
                      Contains("mask of term 1 has dtype Int"));
    CHECK_THROWS_WITH(sl::libtorch::loss(loss, sl::libtorch::inputs(pred, target), sl::libtorch::inputs(pred, target.t())),
                               Contains("target of term 1 has shape [6, 4]"));
  }
  SECTION("target requires grad") {
    CHECK_THROWS_WITH(sl::libtorch::loss(sl::Huber<float>{}, pred, target.clone().set_requires_grad(true)),
                         Contains("target of term 0 requires grad"));
  }
  SECTION("core errors stay steadyloss errors") {
    CHECK_THROWS_AS(sl::libtorch::loss(sl::Huber<float>{.delta = -1.0f}, pred, target), sl::invalid_parameter);
    CHECK_THROWS_WITH(sl::libtorch::loss(sl::BalancedBCE<float>{}, pred, torch::full({4, 6}, 1.5f)),
                         Contains("targets must lie in [0, 1]"));
    CHECK_THROWS_AS(sl::libtorch::loss(sl::Huber<float>{}, pred, target, torch::zeros({4})), sl::invalid_input);
    CHECK_THROWS_AS(sl::libtorch::loss(sl::Huber<float>{}, pred, target, sl::libtorch::lengths(std::vector<int>{1, 2, 7, 0})),
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
  CHECK_THROWS_AS(sl::libtorch::loss(sl::Huber<float>{}, pred, target, mask), sl::invalid_input);
  CHECK_THROWS_WITH(sl::libtorch::loss(sl::Huber<float>{}, pred, target, mask), Contains("subnormal"));

  // Per element: 1e5 / (72 x the smallest normal float) overflows float.
  const auto heavy = sl::term(sl::Huber<float>{}, 1e5f);
  const auto tiny = torch::full({4, 6, 3}, smallest, options_of<float>());
  const auto p = pred.clone().set_requires_grad(true);
  CHECK_THROWS_AS(sl::libtorch::loss(heavy, p, target, tiny), sl::invalid_input);
  CHECK_THROWS_WITH(sl::libtorch::loss(heavy, p, target, tiny), Contains("gradient scale") && Contains("overflows"));
  {
    torch::NoGradGuard value_only;  // no gradient, no factor: the weighted mean is the plain mean
    const double want = 1e5 * F::huber_loss(pred.to(torch::kFloat64), target.to(torch::kFloat64)).item<double>();
    CHECK(sl::libtorch::loss(heavy, pred, target, tiny).item<double>() == Approx(want).epsilon(tolerance<float>()));
  }

  // Per frame ([4, 6] over [4, 6, 3]): the CPU folds each frame's weight in double (factor
  // 1e5 / 72 fits); the CUDA kernel forms 1e5 / sum(w) in float first, so it refuses.
  const auto frames = torch::full({4, 6}, smallest, options_of<float>());
  if (test_device().is_cuda()) {
    CHECK_THROWS_WITH(sl::libtorch::loss(heavy, p, target, frames), Contains("gradient scale") && Contains("overflows"));
  } else {
    compare_with_autograd(
        pred, [&](const torch::Tensor& q) { return sl::libtorch::loss(heavy, q, target, frames); },
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
    const auto out = sl::libtorch::evaluate(loss, sl::libtorch::inputs(m, mel_target, mask), sl::libtorch::inputs(s, stop_target, mask));
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

TEST_CASE("torch evaluate_on runs CPU tensors on the given executor: the serial gradients, the value to rounding") {
  const auto mel_pred = random_pred<float>({8, 400, 80}, 32), mel_target = random_pred<float>({8, 400, 80}, 33);
  const auto stop_logits = random_pred<float>({8, 400}, 34), stop_target = binary_target<float>({8, 400}, 35);
  const std::vector<std::int64_t> valid{400, 17, 256, 399, 1, 300, 128, 64};
  const auto lengths = sl::libtorch::lengths(valid);
  const auto loss = sl::presets::stable_loss<float>();
  const sl::parallel_executor pool(3, 4096);  // 8 x 400 x 80 elements: every long sequence is split
  auto run = [&](auto evaluate) {
    const auto m = mel_pred.clone().set_requires_grad(true), s = stop_logits.clone().set_requires_grad(true);
    const auto out = evaluate(sl::libtorch::inputs(m, mel_target, lengths), sl::libtorch::inputs(s, stop_target, lengths));
    out.total.backward();
    return std::tuple{out.result, m.grad(), s.grad()};
  };
  const auto [serial, mel_serial, stop_serial] =
      run([&](const auto& a, const auto& b) { return sl::libtorch::evaluate(loss, a, b); });
  const auto [parallel, mel_parallel, stop_parallel] =
      run([&](const auto& a, const auto& b) { return sl::libtorch::evaluate_on(pool, loss, a, b); });
  CHECK(torch::equal(mel_parallel, mel_serial));
  CHECK(torch::equal(stop_parallel, stop_serial));
  for (std::size_t i = 0; i < 2; ++i) CHECK(parallel.values[i] == Approx(serial.values[i]).epsilon(1e-6));
}

TEST_CASE("torch half and bfloat16 run on CUDA only, computed in float") {
  const auto pred = random_pred<float>({4, 1000}, 26), target = random_pred<float>({4, 1000}, 27);
  for (const auto dtype : {torch::kFloat16, torch::kBFloat16}) {
    const auto p16 = pred.to(dtype), t16 = target.to(dtype);
    if (!p16.is_cuda()) {
      CHECK_THROWS_WITH(sl::libtorch::loss(sl::Huber<float>{}, p16, t16),
                           Catch::Contains("this term needs float32 (a float term; float64 needs a double term)"));
      continue;
    }
    // Reference: the same rounded inputs in float32 through torch; the value accumulates in
    // float, so only the gradient's rounding to 16 bits separates the two.
    const auto leaf = p16.clone().set_requires_grad(true);
    const auto value = sl::libtorch::loss(sl::Huber<float>{}, leaf, t16);
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

// ---------------------------------------------------------------------------------------------
// steadyloss/backend/torch_step.hpp: the training step's helpers.

namespace {

/// A tensor's elements as float64 on the host, for references computed by hand.
std::vector<double> host_values(const torch::Tensor& t) {
  const auto c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

/// Exact bit equality (torch::equal compares values: it would call -0.0 and 0.0 equal).
bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  const auto ca = a.detach().to(torch::kCPU).contiguous(), cb = b.detach().to(torch::kCPU).contiguous();
  if (ca.scalar_type() == torch::kFloat32) return torch::equal(ca.view(torch::kInt32), cb.view(torch::kInt32));
  if (ca.scalar_type() == torch::kFloat64) return torch::equal(ca.view(torch::kInt64), cb.view(torch::kInt64));
  return torch::equal(ca, cb);
}

/// A parameter with a gradient set by hand (a leaf that requires grad, as a model's).
template <class T>
torch::Tensor parameter_with_grad(std::vector<std::int64_t> shape, std::uint64_t seed, double grad_scale) {
  auto p = random_pred<T>(shape, seed).set_requires_grad(true);
  p.mutable_grad() = random_pred<T>(shape, seed + 1000) * grad_scale;
  return p;
}

}  // namespace

TEMPLATE_TEST_CASE("torch grad_norm is the float64 norm of the per-parameter norms", "[torch_step]", float, double) {
  using T = TestType;
  std::vector<torch::Tensor> params{parameter_with_grad<T>({7, 5}, 30, 1.0), parameter_with_grad<T>({5}, 31, 1e-3),
                                    parameter_with_grad<T>({3, 4, 2}, 32, 40.0), parameter_with_grad<T>({1}, 33, 1.0),
                                    parameter_with_grad<T>({300, 70}, 34, 0.1)};
  // A parameter that requires grad but got none this step (an unused head), and one that does
  // not require grad at all: both are skipped.
  params.insert(params.begin() + 2, random_pred<T>({9}, 35).set_requires_grad(true));
  params.push_back(random_pred<T>({4}, 36));
  REQUIRE_FALSE(params[2].grad().defined());

  // Reference by hand: each gradient's sum of squares in float64, its square root, then the
  // norm of those norms.
  double sum_of_norms_squared = 0;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    double squares = 0;
    for (const double g : host_values(p.grad())) squares += g * g;
    const double norm = std::sqrt(squares);
    sum_of_norms_squared += norm * norm;
  }
  const double expected = std::sqrt(sum_of_norms_squared);

  const double actual = sl::libtorch::grad_norm(params);
  static_assert(std::is_same_v<decltype(sl::libtorch::grad_norm(params)), double>);
  const double rel = std::is_same_v<T, float> ? 2e-6 : 1e-13;
  INFO("expected " << expected << ", got " << actual);
  CHECK(std::fabs(actual - expected) <= rel * expected);

  SECTION("no gradient at all is 0") {
    const std::vector<torch::Tensor> none{random_pred<T>({3}, 37).set_requires_grad(true), random_pred<T>({2}, 38)};
    CHECK(sl::libtorch::grad_norm(none) == 0.0);
    CHECK(sl::libtorch::grad_norm(std::vector<torch::Tensor>{}) == 0.0);
  }
  SECTION("float32 and float64 gradients together") {
    const std::vector<torch::Tensor> mixed{parameter_with_grad<float>({6, 3}, 39, 2.0),
                                           parameter_with_grad<double>({11}, 40, 3.0)};
    double squares = 0;
    for (const auto& p : mixed)
      for (const double g : host_values(p.grad())) squares += g * g;
    CHECK(std::fabs(sl::libtorch::grad_norm(mixed) - std::sqrt(squares)) <= 2e-6 * std::sqrt(squares));
  }
}

TEMPLATE_TEST_CASE("torch apply scales the gradients by the report's scale and says whether to step",
                   "[torch_step]", float, double) {
  using T = TestType;
  std::vector<torch::Tensor> params{parameter_with_grad<T>({4, 3}, 41, 1.0), parameter_with_grad<T>({3}, 42, 5.0),
                                    random_pred<T>({2}, 43).set_requires_grad(true)};  // no grad: left alone
  const std::vector<torch::Tensor> before{params[0].grad().clone(), params[1].grad().clone()};
  const void* storage = params[0].grad().data_ptr();
  sl::step_report<float, 2> report;

  SECTION("scale 0.5: every gradient halved in place (exactly: a power of two)") {
    report.scale = 0.5f;
    CHECK(sl::libtorch::apply(report, params));
    CHECK(same_bits(params[0].grad(), before[0] * 0.5));
    CHECK(same_bits(params[1].grad(), before[1] * 0.5));
    CHECK(params[0].grad().data_ptr() == storage);
    CHECK_FALSE(params[2].grad().defined());
    CHECK_FALSE(params[0].grad().requires_grad());
  }
  SECTION("scale 1: step, gradients untouched") {
    CHECK(sl::libtorch::apply(report, params));
    CHECK(same_bits(params[0].grad(), before[0]));
  }
  SECTION("skipped (scale 0): no step, gradients untouched") {
    report.scale = 0.0f;
    report.skipped = true;
    CHECK_FALSE(sl::libtorch::apply(report, params));
    CHECK(same_bits(params[0].grad(), before[0]));
    CHECK(same_bits(params[1].grad(), before[1]));
  }
  SECTION("non-finite step: no step even when no policy skipped it") {
    report.non_finite = true;
    CHECK_FALSE(sl::libtorch::apply(report, params));
    CHECK(same_bits(params[0].grad(), before[0]));
  }
  SECTION("a scale that is not finite and > 0 on a step that is not skipped is an error") {
    report.scale = -1.0f;
    CHECK_THROWS_WITH(sl::libtorch::apply(report, params), Catch::Contains("report.scale must be finite and > 0"));
  }
}

TEST_CASE("torch best_weights copies on improvement only, without allocating again, and restores exact bits",
          "[torch_step]") {
  torch::manual_seed(44);
  torch::nn::Sequential model(torch::nn::Linear(5, 4), torch::nn::BatchNorm1d(4), torch::nn::Linear(4, 2));
  model->to(test_device());
  sl::libtorch::best_weights best(*model);
  // 3 x (weight, bias) + BatchNorm's weight and bias, then its running_mean, running_var and
  // num_batches_tracked.
  REQUIRE(best.tensors().size() == model->parameters().size() + model->buffers().size());
  REQUIRE(model->buffers().size() == 3);

  const auto train_step = [&](std::uint64_t seed) {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(random_pred<float>(p.sizes().vec(), seed++) * 0.1);
    (void)model->forward(random_pred<float>({8, 5}, seed));  // training mode: moves BatchNorm's running stats
  };
  const auto snapshot = [&] {
    std::vector<torch::Tensor> out;
    for (const auto& t : best.tensors()) out.push_back(t.detach().clone());
    return out;
  };
  const auto all_same_bits = [](const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i)
      if (!same_bits(a[i], b[i])) return false;
    return true;
  };

  // The validation checks' reports (check index, training step, improved).
  sl::validation_stopper<float> stopper({.patience = 10, .min_delta = 0.0});
  CHECK_FALSE(best.restore());  // nothing kept yet: the model is left alone
  CHECK_FALSE(best.has_value());

  CHECK(best.update(stopper.check(3.0f, 9)));  // first check: improved, the first copy
  REQUIRE(best.has_value());
  CHECK(best.step() == 9);
  CHECK(best.check() == 0);
  const auto first = snapshot();
  CHECK(all_same_bits(best.kept(), first));
  std::vector<const void*> storage;
  for (const auto& k : best.kept()) {
    storage.push_back(k.data_ptr());
    CHECK_FALSE(k.requires_grad());
    CHECK(k.grad_fn() == nullptr);
  }

  train_step(50);
  CHECK_FALSE(best.update(stopper.check(3.5f, 19)));  // worse: nothing copied
  CHECK(all_same_bits(best.kept(), first));

  train_step(60);
  CHECK(best.update(stopper.check(2.0f, 29)));  // better: copied into the same tensors
  CHECK(best.step() == 29);
  CHECK(best.check() == 2);
  const auto second = snapshot();
  CHECK(all_same_bits(best.kept(), second));
  CHECK_FALSE(all_same_bits(second, first));
  for (std::size_t i = 0; i < storage.size(); ++i) CHECK(best.kept()[i].data_ptr() == storage[i]);

  train_step(70);
  CHECK_FALSE(best.update(stopper.check(2.5f, 39)));
  CHECK(best.step() == 29);
  std::vector<const void*> live_storage;
  for (const auto& t : best.tensors()) live_storage.push_back(t.data_ptr());
  CHECK(best.restore());
  CHECK(all_same_bits(snapshot(), second));  // parameters and running statistics
  const auto params = model->parameters();
  for (std::size_t i = 0; i < live_storage.size(); ++i) CHECK(best.tensors()[i].data_ptr() == live_storage[i]);
  for (const auto& p : params) {
    CHECK(p.requires_grad());
    CHECK(p.is_leaf());
  }
  for (std::size_t i = 0; i < storage.size(); ++i) CHECK(best.kept()[i].data_ptr() == storage[i]);
}

TEST_CASE("torch frozen_copy: the validation total does not move with the live loss's multipliers and scales",
          "[torch_step]") {
  auto loss = sl::presets::stable_loss<float>();  // AdaptiveHuber mel + smoothed BCE stop
  const auto validation_loss = sl::libtorch::frozen_copy(loss);
  const auto mel_pred = random_pred<float>({4, 10, 6}, 45), mel_target = random_pred<float>({4, 10, 6}, 46);
  const auto stop_logits = random_pred<float>({4, 10}, 47), stop_target = binary_target<float>({4, 10}, 48);
  const auto lengths = sl::libtorch::lengths(std::vector<int>{10, 7, 3, 9});
  const auto total_of = [&](const auto& l) {
    return sl::libtorch::evaluate(l, sl::libtorch::inputs(mel_pred, mel_target, lengths),
                                  sl::libtorch::inputs(stop_logits, stop_target, lengths))
        .result.total;
  };
  const float validation_before = total_of(validation_loss);
  const float live_before = total_of(loss);
  CHECK(std::bit_cast<std::uint32_t>(validation_before) == std::bit_cast<std::uint32_t>(live_before));

  // What a step's report does to the live loss: AdaptiveWeight's multipliers and the mel term's
  // error scale (the stop term follows none: NaN).
  sl::step_report<float, 2> report;
  report.weights = {1.3f, 0.7f};
  report.error_scales = {0.05f, std::numeric_limits<float>::quiet_NaN()};
  sl::apply(loss, report);
  REQUIRE(loss.term<0>().scale == 0.05f);
  CHECK(total_of(loss) != live_before);
  CHECK(std::bit_cast<std::uint32_t>(total_of(validation_loss)) == std::bit_cast<std::uint32_t>(validation_before));
  CHECK(validation_loss.multipliers() == std::array<float, 2>{1.0f, 1.0f});
  CHECK(validation_loss.term<0>().scale == 1.0f);

  // A copy made later has multipliers 1 again but keeps the scale it finds (hence: before training).
  const auto late = sl::libtorch::frozen_copy(loss);
  CHECK(late.multipliers() == std::array<float, 2>{1.0f, 1.0f});
  CHECK(late.weights() == late.base_weights());
  CHECK(late.term<0>().scale == 0.05f);
}

TEMPLATE_TEST_CASE("torch AdaptiveHuber matches a float64 reference of value and gradient", "[torch_step]", float,
                   double) {
  using T = TestType;
  const auto pred = random_pred<T>({5, 41}, 49), target = random_pred<T>({5, 41}, 50);
  const std::vector<double> p = host_values(pred), t = host_values(target);
  const double n = static_cast<double>(p.size());
  for (const double k : {3.88, 1.0}) {
    for (const double scale : {0.05, 0.3, 1.0, 4.0}) {
      INFO("k " << k << ", scale " << scale);
      const sl::AdaptiveHuber<T> term{.k = T(k), .scale = T(scale)};
      // Reference: value = huber_delta(d) / delta, grad = clamp(d, -delta, delta) / delta, then
      // the mean's 1 / n; delta = k x scale.
      const double delta = k * scale;
      double value = 0;
      std::vector<double> grad(p.size());
      for (std::size_t i = 0; i < p.size(); ++i) {
        const double d = p[i] - t[i];
        const double huber = std::fabs(d) <= delta ? 0.5 * d * d : delta * (std::fabs(d) - 0.5 * delta);
        value += huber / delta;
        grad[i] = std::clamp(d, -delta, delta) / delta / n;
      }
      value /= n;
      const auto leaf = pred.clone().set_requires_grad(true);
      const auto out = sl::libtorch::loss(term, leaf, target);
      out.backward();
      const auto expected_grad = torch::tensor(grad, torch::kFloat64).view(pred.sizes());
      require_close(out, torch::scalar_tensor(value, torch::kFloat64), 4 * tolerance<T>(), "value");
      // x n: per-element gradients of magnitude up to 1, so the absolute part of the tolerance bites.
      require_close(leaf.grad() * n, expected_grad * n, 4 * tolerance<T>(), "gradient x n");
    }
  }
}

TEST_CASE("torch grad_norm takes float16 and bfloat16 gradients in float32, past float16's range", "[torch_step]") {
  for (const auto dtype : {torch::kFloat16, torch::kBFloat16}) {
    INFO("dtype " << dtype);
    // 40000 elements of about 100: a norm of about 20000 x sqrt(E[u^2]) > 65504 = float16's max,
    // so a norm computed in float16 would be Inf.
    auto big = torch::zeros({200, 200}, torch::TensorOptions().dtype(dtype).device(test_device())).set_requires_grad(true);
    big.mutable_grad() = (torch::rand({200, 200}, torch::kFloat64) * 100.0 + 300.0).to(big.options());
    auto small = torch::zeros({7}, torch::TensorOptions().dtype(dtype).device(test_device())).set_requires_grad(true);
    small.mutable_grad() = torch::linspace(-3.0, 3.0, 7, torch::kFloat64).to(small.options());
    auto f32 = parameter_with_grad<float>({5, 4}, 51, 2.0);
    double squares = 0;
    for (const auto* p : {&big, &small, &f32})
      for (const double g : host_values(p->grad())) squares += g * g;
    const double expected = std::sqrt(squares);
    REQUIRE(expected > 65504.0);
    const double actual = sl::libtorch::grad_norm(std::vector<torch::Tensor>{big, small, f32});
    INFO("expected " << expected << ", got " << actual);
    CHECK(std::fabs(actual - expected) <= 1e-5 * expected);
  }
}

TEST_CASE("torch best_weights over a list of tensors, and a changed shape is an error", "[torch_step]") {
  auto a = random_pred<float>({3, 2}, 52).set_requires_grad(true);
  auto b = random_pred<double>({4}, 53);
  sl::libtorch::best_weights best({a, b});
  sl::step_report<float, 0> report;  // a step report works too: it has `improved` and `step`
  report.improved = true;
  report.step = 12;
  CHECK(best.update(report));
  CHECK(best.step() == 12);
  CHECK(best.check() == -1);  // a step report has no check index
  const auto kept_a = a.detach().clone(), kept_b = b.clone();
  {
    torch::NoGradGuard no_grad;
    a.mul_(3.0);
    b.add_(1.0);
  }
  CHECK(best.restore());
  CHECK(same_bits(a, kept_a));
  CHECK(same_bits(b, kept_b));
  CHECK(a.requires_grad());

  b.set_data(torch::zeros({5}, b.options()));  // the model changed shape after the first copy
  CHECK_THROWS_WITH(best.restore(), Catch::Contains("best_weights::restore: tensor 1 has shape [5] but its kept copy "
                                                    "has [4]"));
  CHECK_THROWS_WITH(best.keep(), Catch::Contains("best_weights::keep: tensor 1 has shape [5]"));
}
