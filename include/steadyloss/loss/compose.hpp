#pragma once
// A multi-term loss whose structure is a type: compose(term(Huber<float>{}, 35.0f),
// term(LabelSmoothing{BalancedBCE<float>{}, 0.05f}, 1.0f)). Evaluating it runs each term's fused
// pass once, returns each term's reduced value and the weighted total, and writes each term's
// weighted gradient. Weights are runtime values: each term has a base weight (set here) and a
// multiplier (1 by default) that a step policy such as AdaptiveWeight changes between steps;
// the weight a term is evaluated with is base_weight * multiplier.

#include <array>
#include <cmath>
#include <cstddef>
#include <optional>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../core/fwd.hpp"
#include "../core/errors.hpp"
#include "../core/evaluate.hpp"
#include "../core/inputs.hpp"
#include "../core/reduction.hpp"
#include "../core/result.hpp"
#include "../core/term.hpp"

namespace steadyloss {

/// One term of a composed loss with its base weight and reduction.
template <class Term>
struct weighted_term {
  static_assert(LossTerm<Term>,
                "steadyloss::compose: this part is not a loss term; a term needs `using value_type = "
                "float or double`, `value(pred, target)` and `grad(pred, target)`");
  using term_type = Term;
  Term term;
  typename Term::value_type weight = 1;
  steadyloss::reduction reduction = steadyloss::reduction::mean;
};

template <class Term>
auto term(Term loss_term, std::type_identity_t<typename Term::value_type> weight = 1,
          reduction reduction = reduction::mean) {
  return weighted_term<Term>{loss_term, weight, reduction};
}

namespace detail {
template <class T>
struct as_weighted_term {
  using type = weighted_term<T>;
};
template <class Term>
struct as_weighted_term<weighted_term<Term>> {
  using type = weighted_term<Term>;
};
/// Keyed on the type, not on a member: a user's term may well have a member named `reduction`.
template <class T>
inline constexpr bool is_weighted_term = false;
template <class Term>
inline constexpr bool is_weighted_term<weighted_term<Term>> = true;
template <class T>
inline constexpr bool is_grad_outputs = false;
template <class T, std::size_t N>
inline constexpr bool is_grad_outputs<grad_outputs<T, N>> = true;

template <class T>
void check_weights(const char* what, std::span<const T> values, std::size_t expected) {
  if (values.size() != expected)
    fail<shape_mismatch>("composed_loss::", what, ": expects ", expected, " values, got ", values.size());
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!(values[i] >= T(0)) || !std::isfinite(values[i]))
      fail<invalid_parameter>("composed_loss::", what, ": value ", i, " must be finite and >= 0, got ",
                              values[i]);
}

/// The weight term `index` is evaluated with, base x multiplier, computed in T: it must stay
/// finite (1e30 x 1e30 in float would give an Inf total and Inf or NaN gradients).
template <class T>
T checked_weight_product(const char* what, std::size_t index, T base, T multiplier) {
  const T weight = base * multiplier;
  if (!std::isfinite(weight))
    fail<invalid_parameter>("composed_loss::", what, ": term ", index, "'s weight, base weight ", base,
                            " x multiplier ", multiplier, ", is not finite");
  return weight;
}

template <class T, std::size_t N>
void check_weight_products(const char* what, const std::array<T, N>& bases, const std::array<T, N>& multipliers) {
  for (std::size_t i = 0; i < N; ++i) checked_weight_product(what, i, bases[i], multipliers[i]);
}
}  // namespace detail

template <class... Terms>
class composed_loss {
  static_assert(sizeof...(Terms) > 0, "steadyloss::compose: give at least one term");
  using first_term = std::tuple_element_t<0, std::tuple<Terms...>>;

 public:
  using value_type = typename first_term::value_type;
  static constexpr std::size_t size = sizeof...(Terms);
  static_assert((std::same_as<typename Terms::value_type, value_type> && ...),
                "steadyloss::compose: all terms must share one value_type (all float or all double)");

  explicit composed_loss(weighted_term<Terms>... terms) : terms_{terms...} {
    std::array<value_type, size> bases{terms.weight...};
    detail::check_weights<value_type>("compose", bases, size);
    (detail::check_reduction(terms.reduction, "compose"), ...);
    multipliers_.fill(value_type(1));
  }

  /// evaluate(inputs_0, ..., inputs_{N-1}, grads(g_0, ..., g_{N-1})): values and gradients.
  /// evaluate(inputs_0, ..., inputs_{N-1}): values only.
  /// (Isa, here and below: never given; cpu_isa.hpp says why it is there.)
  template <class... Args, class Isa = detail::isa_tag>
  composed_result<value_type, size> evaluate(const Args&... args) const {
    return evaluate_on(detail::serial_executor{}, args...);
  }

  /// The same, with the fused passes run by `executor`: a sl::parallel_executor, or any type
  /// modelling sl::Executor for every term (core/executor.hpp).
  template <class Exec, class... Args, class Isa = detail::isa_tag>
  composed_result<value_type, size> evaluate_on(const Exec& executor, const Args&... args) const {
    static_assert((Executor<Exec, Terms> && ...),
                  "steadyloss::composed_loss::evaluate_on: the first argument must be an executor: a type "
                  "with run<WriteGrad, Weighted>(term, pred, target, weight, grad, n, grad_scale) returning "
                  "sl::pass_sum for every term of the loss (sl::Executor, core/executor.hpp)");
    constexpr bool with_grads = sizeof...(Args) == size + 1;
    static_assert(sizeof...(Args) == size || with_grads,
                  "steadyloss::composed_loss::evaluate: pass one sl::inputs(...) per term, in term "
                  "order, then optionally sl::grads(...) with one gradient per term");
    const auto arguments = std::forward_as_tuple(args...);
    if constexpr (with_grads) {
      using Grads = std::remove_cvref_t<std::tuple_element_t<size, std::tuple<Args...>>>;
      static_assert(detail::is_grad_outputs<Grads>,
                    "steadyloss::composed_loss::evaluate: the last argument must be sl::grads(...)");
      if constexpr (detail::is_grad_outputs<Grads>) {
        static_assert(std::tuple_size_v<decltype(Grads::views)> == size,
                      "steadyloss::composed_loss::evaluate: sl::grads(...) needs one gradient per term");
        if constexpr (detail::check_gradient_value_type<value_type, Grads>()) {
          const auto& outputs = std::get<size>(arguments).views;
          return run<Isa>(executor, arguments, [&](std::size_t index) {
            return std::optional<mutable_tensor_view<value_type>>(outputs[index]);
          });
        }
      }
    } else {
      return run<Isa>(executor, arguments,
                      [](std::size_t) { return std::optional<mutable_tensor_view<value_type>>(); });
    }
  }

  std::array<value_type, size> base_weights() const {
    return std::apply([](const auto&... t) { return std::array<value_type, size>{t.weight...}; }, terms_);
  }
  std::array<value_type, size> multipliers() const { return multipliers_; }
  std::array<value_type, size> weights() const {
    auto result = base_weights();
    for (std::size_t i = 0; i < size; ++i) result[i] *= multipliers_[i];
    return result;
  }

  void set_base_weights(std::span<const value_type> weights) {
    detail::check_weights<value_type>("set_base_weights", weights, size);
    std::array<value_type, size> bases{};
    for (std::size_t i = 0; i < size; ++i) bases[i] = weights[i];
    detail::check_weight_products("set_base_weights", bases, multipliers_);
    set_each(weights, [](auto& t, value_type w) { t.weight = w; });
  }
  /// What a step policy (AdaptiveWeight) sets between steps; the next evaluation uses them.
  void set_multipliers(std::span<const value_type> multipliers) {
    detail::check_weights<value_type>("set_multipliers", multipliers, size);
    std::array<value_type, size> next{};
    for (std::size_t i = 0; i < size; ++i) next[i] = multipliers[i];
    detail::check_weight_products("set_multipliers", base_weights(), next);
    multipliers_ = next;
  }

  template <std::size_t I>
  steadyloss::reduction reduction() const { return std::get<I>(terms_).reduction; }

  template <std::size_t I>
  auto& term() { return std::get<I>(terms_).term; }
  template <std::size_t I>
  const auto& term() const { return std::get<I>(terms_).term; }

 private:
  // Every term is checked (parameters, sizes, masks, lengths, and each gradient against every
  // other gradient and every term's inputs) before the first term writes anything.
  template <class Isa, class Exec, class Arguments, class GradFor>
  composed_result<value_type, size> run(const Exec& executor, const Arguments& arguments,
                                        GradFor grad_for) const {
    composed_result<value_type, size> result;
    std::array<detail::term_plan, size> plans;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (([&] {
         using Inputs = std::remove_cvref_t<std::tuple_element_t<I, Arguments>>;
         static_assert(detail::is_term_inputs<Inputs>,
                       "steadyloss::composed_loss::evaluate: pass sl::inputs(pred, target[, mask]) "
                       "for each term");
         static_assert(std::same_as<typename Inputs::value_type, value_type>,
                       "steadyloss::composed_loss::evaluate: the tensors' value_type differs from "
                       "the terms' (float terms need float tensors)");
         const auto& entry = std::get<I>(terms_);
         result.weights[I] = detail::checked_weight_product("evaluate", I, entry.weight, multipliers_[I]);
         plans[I] = detail::plan_term(entry.term, std::get<I>(arguments), grad_for(I), entry.reduction,
                                      result.weights[I]);
       }()),
       ...);
      for (std::size_t i = 0; i < size; ++i) {
        const auto grad = grad_for(i);
        if (!grad) continue;
        for (std::size_t j = i + 1; j < size; ++j) {
          const auto other = grad_for(j);
          if (other && detail::overlaps<value_type>(grad->data, grad->size, other->data, other->size))
            detail::fail<invalid_input>("composed_loss::evaluate: gradients of terms ", i, " and ", j,
                                        " overlap; each term overwrites its own gradient buffer");
        }
        (check_not_input(*grad, i, I, std::get<I>(arguments)), ...);
      }
    }(std::index_sequence_for<Terms...>{});

    double total = 0;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (([&] {
         const auto& entry = std::get<I>(terms_);
         const auto grad = grad_for(I);
         const term_result<value_type> r =
             detail::execute_term<Isa>(entry.term, std::get<I>(arguments), plans[I],
                                  grad ? grad->data : nullptr, executor);
         result.values[I] = r.value;
         result.denominators[I] = r.denominator;
         total += static_cast<double>(result.weights[I]) * static_cast<double>(r.value);
       }()),
       ...);
    }(std::index_sequence_for<Terms...>{});
    result.total = static_cast<value_type>(total);
    return result;
  }

  /// A gradient must not be another term's pred, target or mask: it would be overwritten before
  /// that term reads it.
  template <class Inputs>
  static void check_not_input(const mutable_tensor_view<value_type>& grad, std::size_t grad_term,
                              std::size_t input_term, const Inputs& in) {
    bool overlap = detail::overlaps<value_type>(grad.data, grad.size, in.pred.data, in.pred.size) ||
                   detail::overlaps<value_type>(grad.data, grad.size, in.target.data, in.target.size);
    if constexpr (requires { in.weighting.weights; })
      overlap = overlap || detail::overlaps<value_type>(grad.data, grad.size, in.weighting.weights.data,
                                                        in.weighting.weights.size);
    if (overlap)
      detail::fail<invalid_input>("composed_loss::evaluate: the gradient of term ", grad_term,
                                  " overlaps the inputs of term ", input_term);
  }

  template <class Assign>
  void set_each(std::span<const value_type> values, Assign assign) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (assign(std::get<I>(terms_), values[I]), ...);
    }(std::index_sequence_for<Terms...>{});
  }

  std::tuple<weighted_term<Terms>...> terms_;
  std::array<value_type, size> multipliers_{};
};

/// Builds a composed loss from terms, each given as term(loss, weight, reduction) or as a bare
/// loss term (weight 1, mean).
template <class... Parts>
auto compose(Parts... parts) {
  return composed_loss<typename detail::as_weighted_term<Parts>::type::term_type...>{
      [](auto part) {
        if constexpr (detail::is_weighted_term<decltype(part)>) return part;
        else return term(part);
      }(parts)...};
}

}  // namespace steadyloss
