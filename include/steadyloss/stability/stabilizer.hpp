#pragma once
// Stabilizer<Policies...>: the step policies composed at compile time. update() globalizes the
// step's inputs through the Reducer (a no-op sum for the default, single-process local_reducer),
// then runs the policies in the order listed, each reading and writing one step context, and
// returns one step_report. An absent policy costs nothing: its report fields keep their neutral
// values.
//
// Order matters and is the user's: SpikeDampener before EmaSmoother smooths the dampened loss;
// EmaSmoother before SpikeDampener smooths the raw one. A policy that needs another's output says
// so (`using depends_on = type_list<policy_kind::...>`) and gets a static_assert if that policy is
// not listed before it.
//
// Multi-rank (with_reducer(r, policies...)): per-term values are combined as count-weighted
// means, sum_r(value_r * count_r) / sum_r(count_r), with the composed loss's denominators as
// counts; plain scalars (update(total, grad_norm)) as means over ranks; the gradient norm as the
// mean over ranks (unchanged when, as in data-parallel training, every rank already holds the
// global norm); a non-finite value on any rank makes the step non-finite everywhere.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../fwd.hpp"
#include "../core/errors.hpp"
#include "../core/reduction.hpp"
#include "../core/result.hpp"
#include "../core/term.hpp"
#include "reducer.hpp"
#include "state_io.hpp"
#include "step.hpp"

namespace steadyloss {

/// A step policy: anything with on_step(step_context<N>&), N the number of loss terms (write it
/// as a template over N to fit any pipeline). Everything else is optional and detected:
///   using value_type = float or double;   absent: fits any (the Stabilizer's comes from the others)
///   using kind = ...;                     absent: the policy's own type (what depends_on names)
///   using depends_on = type_list<...>;    absent: none; each kind must be listed before the policy
///   save(state_writer&) const, load(state_reader&)   absent: stateless, saves nothing
///   fill(step_report&) const, check_step(state_reader&, long long) const
/// docs/extending.md has a complete example.
template <class P, std::size_t N = 0>
concept StepPolicy = requires(P& p, step_context<N>& ctx) { p.on_step(ctx); };

namespace detail {
template <class P>
struct policy_kind_of {
  using type = P;
};
template <class P>
  requires requires { typename P::kind; }
struct policy_kind_of<P> {
  using type = typename P::kind;
};
template <class P>
using policy_kind_t = typename policy_kind_of<P>::type;

template <class P>
struct policy_depends_on {
  using type = type_list<>;
};
template <class P>
  requires requires { typename P::depends_on; }
struct policy_depends_on<P> {
  using type = typename P::depends_on;
};
template <class P>
using policy_depends_on_t = typename policy_depends_on<P>::type;

template <class P>
concept has_value_type = requires { typename P::value_type; };
template <class P>
concept saves_state = requires(const P& p, state_writer& out) { p.save(out); };
template <class P>
concept loads_state = requires(P& p, state_reader& in) { p.load(in); };

template <class Kind, class List>
inline constexpr bool list_has = false;
template <class Kind, class... Kinds>
inline constexpr bool list_has<Kind, type_list<Kinds...>> = (std::is_same_v<Kind, Kinds> || ...);

template <class P>
inline constexpr std::size_t policy_terms = 0;
template <class P>
  requires requires { P::terms; }
inline constexpr std::size_t policy_terms<P> = P::terms;

template <class... Policies>
struct policy_pack {
  template <class Kind>
  static constexpr std::size_t count = (std::size_t{0} + ... + std::is_same_v<policy_kind_t<Policies>, Kind>);
  template <class Policy>
  static constexpr std::size_t count_type = (std::size_t{0} + ... + std::is_same_v<Policies, Policy>);

  /// Is a policy of kind Kind listed before position `before`?
  template <class Kind>
  static constexpr bool listed_before(std::size_t before) {
    constexpr bool kinds[] = {std::is_same_v<policy_kind_t<Policies>, Kind>..., false};
    for (std::size_t i = 0; i < before; ++i)
      if (kinds[i]) return true;
    return false;
  }
  template <std::size_t I, class List>
  struct met_at;
  template <std::size_t I, class... Kinds>
  struct met_at<I, type_list<Kinds...>> {
    static constexpr bool value = (listed_before<Kinds>(I) && ...);
  };

  /// Every policy that depends on Kind has a policy of that kind listed before it.
  template <class Kind>
  static constexpr bool dependency_met() {
    constexpr bool needs[] = {list_has<Kind, policy_depends_on_t<Policies>>..., false};
    for (std::size_t i = 0; i < sizeof...(Policies); ++i)
      if (needs[i] && !listed_before<Kind>(i)) return false;
    return true;
  }
  /// Every kind named in any depends_on list, built-in or a user's, is listed before its dependent.
  static constexpr bool dependencies_met() {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return (met_at<I, policy_depends_on_t<Policies>>::value && ...);
    }(std::index_sequence_for<Policies...>{});
  }

  // The number of loss terms the term-aware policies (AdaptiveWeight<N>, ErrorScale<N>) agree on;
  // 0 when none is listed.
  static constexpr std::size_t terms = std::max({std::size_t{0}, policy_terms<Policies>...});
  static constexpr bool terms_agree = ((policy_terms<Policies> == 0 || policy_terms<Policies> == terms) && ...);
};

/// The first value_type a policy names (float when none does).
template <class... Policies>
struct first_value_type {
  using type = float;
};
template <class First, class... Rest>
struct first_value_type<First, Rest...> {
  using type = typename first_value_type<Rest...>::type;
};
template <has_value_type First, class... Rest>
struct first_value_type<First, Rest...> {
  using type = typename First::value_type;
};

template <class P, class T>
inline constexpr bool value_type_fits = true;
template <has_value_type P, class T>
inline constexpr bool value_type_fits<P, T> = std::is_same_v<typename P::value_type, T>;
}  // namespace detail

template <Reducer R, class... Policies>
class BasicStabilizer {
  using pack = detail::policy_pack<Policies...>;
  static_assert(pack::terms_agree,
                "steadyloss::Stabilizer: AdaptiveWeight<N> and ErrorScale<N> must name the same number of loss terms");

 public:
  using value_type = typename detail::first_value_type<Policies...>::type;
  static constexpr std::size_t terms = pack::terms;
  using report_type = step_report<value_type, terms>;

  static_assert((StepPolicy<Policies, terms> && ...),
                "steadyloss::Stabilizer: a policy has no on_step; a step policy needs "
                "`void on_step(steadyloss::step_context<N>& ctx)` (N = the number of loss terms, 0 without "
                "AdaptiveWeight<N>/ErrorScale<N>; a template over N fits any pipeline); add one, or list "
                "EmaSmoother, SpikeDampener, AdaptiveWeight, ErrorScale, EarlyStopper or StabilityMetrics "
                "(docs/extending.md)");
  static_assert(((detail::saves_state<Policies> == detail::loads_state<Policies>) && ...),
                "steadyloss::Stabilizer: a policy has save(state_writer&) const without load(state_reader&) or "
                "the reverse; give it both (stateful) or neither (stateless)");
  static_assert((detail::value_type_fits<Policies, value_type> && ...),
                "steadyloss::Stabilizer: all policies must share one value_type (all float or all double)");
  static_assert(pack::template dependency_met<policy_kind::ema_smoother>(),
                "steadyloss::Stabilizer: a policy monitors the smoothed loss (depends_on EmaSmoother); list an "
                "EmaSmoother before it");
  static_assert(pack::template dependency_met<policy_kind::spike_dampener>(),
                "steadyloss::Stabilizer: a policy depends_on SpikeDampener; list a SpikeDampener before it");
  static_assert(pack::dependencies_met(),
                "steadyloss::Stabilizer: a policy's depends_on names a kind that no policy listed before it has; "
                "list a policy of that kind (a policy's kind is its `using kind`, or its own type) before it");
  static_assert(pack::template count<policy_kind::ema_smoother> <= 1 &&
                    pack::template count<policy_kind::adaptive_weight> <= 1 &&
                    pack::template count<policy_kind::early_stopper> <= 1 &&
                    pack::template count<policy_kind::stability_metrics> <= 1 &&
                    pack::template count<policy_kind::error_scale> <= 1,
                "steadyloss::Stabilizer: list each of EmaSmoother, AdaptiveWeight, ErrorScale, EarlyStopper and "
                "StabilityMetrics at most once (SpikeDampener may repeat, e.g. one on the loss and one on "
                "the gradient norm)");

  BasicStabilizer() = default;
  explicit BasicStabilizer(Policies... policies)
    requires(sizeof...(Policies) > 0)
      : policies_(std::move(policies)...) {}
  BasicStabilizer(R reducer, Policies... policies) : reducer_(std::move(reducer)), policies_(std::move(policies)...) {}

  /// One step from a composed-loss evaluation and the gradient norm.
  template <std::size_t M>
  report_type update(const composed_result<value_type, M>& result, value_type grad_norm) {
    static_assert(terms == 0 || terms == M,
                  "steadyloss::Stabilizer::update: AdaptiveWeight<N> and the composed loss have different numbers "
                  "of terms");
    step_inputs<M> in;
    in.loss = static_cast<double>(result.total);
    in.grad_norm = static_cast<double>(grad_norm);
    in.finite = std::isfinite(result.total) && std::isfinite(grad_norm);
    for (std::size_t i = 0; i < M; ++i) {
      in.finite = in.finite && std::isfinite(result.values[i]);
      in.values[i] = static_cast<double>(result.values[i]);
      in.weights[i] = static_cast<double>(result.weights[i]);
      in.counts[i] = result.denominators[i];
    }
    in.weighted_total = true;
    in.has_terms = true;
    return run(globalize(in));
  }

  /// One step from a total loss and gradient norm (no per-term values: no AdaptiveWeight).
  report_type update(value_type total, value_type grad_norm) {
    static_assert(terms == 0,
                  "steadyloss::Stabilizer::update: AdaptiveWeight needs per-term values; call update(result, "
                  "grad_norm) with the composed loss's result, or update(total, per_term_values, grad_norm)");
    return update_scalars(total, std::span<const value_type>{}, grad_norm);
  }
  /// One step from a total loss, per-term values (evaluated with weight 1 each) and gradient norm.
  report_type update(value_type total, std::span<const value_type> values, value_type grad_norm) {
    if (terms > 0 && values.size() != terms)
      detail::fail<shape_mismatch>("Stabilizer::update: per_term_values must have ", terms, " entries, got ",
                                   values.size());
    return update_scalars(total, values, grad_norm);
  }

  /// The policy of type Policy (listed once), or the I-th policy (0-based, any policy).
  template <class Policy>
  Policy& get() {
    check_get<Policy>();
    return std::get<Policy>(policies_);
  }
  template <class Policy>
  const Policy& get() const {
    check_get<Policy>();
    return std::get<Policy>(policies_);
  }
  template <std::size_t I>
  auto& get() {
    static_assert(I < sizeof...(Policies), "steadyloss::Stabilizer::get<I>: I is past the last policy");
    return std::get<I>(policies_);
  }
  template <std::size_t I>
  const auto& get() const {
    static_assert(I < sizeof...(Policies), "steadyloss::Stabilizer::get<I>: I is past the last policy");
    return std::get<I>(policies_);
  }

  long long steps() const { return step_; }
  R& reducer() { return reducer_; }

  /// The full state (every policy, every counter) in the format of state_io.hpp.
  std::string save() const {
    state_writer out;
    out.begin("Stabilizer");
    out.put_int("policies", static_cast<long long>(sizeof...(Policies)));
    out.put_int("step", step_);
    std::apply([&](const auto&... p) {
      ([&] { if constexpr (detail::saves_state<std::remove_cvref_t<decltype(p)>>) p.save(out); }(), ...);
    }, policies_);
    out.end("Stabilizer");
    return out.finish();
  }
  /// Restores what save() wrote, into an identically configured Stabilizer. Throws
  /// steadyloss::invalid_input on a corrupted, truncated, wrong-version or mismatched state and
  /// then leaves this Stabilizer unchanged.
  void restore(std::string_view text) {
    state_reader in(text);
    in.begin("Stabilizer");
    const long long count = in.get_int("policies");
    if (count != static_cast<long long>(sizeof...(Policies)))
      detail::fail<invalid_input>("steadyloss state: saved with ", count, " policies, this Stabilizer has ",
                                  sizeof...(Policies));
    const long long step = in.get_count("step");
    auto staged = policies_;
    std::apply([&](auto&... p) {
      ([&] { if constexpr (detail::loads_state<std::remove_cvref_t<decltype(p)>>) p.load(in); }(), ...);
    }, staged);
    // Every policy sees each step at most once: no counter may run ahead of the pipeline's.
    std::apply([&](const auto&... p) {
      ([&] { if constexpr (requires { p.check_step(in, step); }) p.check_step(in, step); }(), ...);
    }, staged);
    in.end("Stabilizer");
    in.finish();
    policies_ = std::move(staged);
    step_ = step;
  }

  static constexpr bool has_adaptive_weight = pack::template count<policy_kind::adaptive_weight> > 0;
  static constexpr bool has_error_scale = pack::template count<policy_kind::error_scale> > 0;

  /// ErrorScale's current scales (NaN without an ErrorScale): what the last report's
  /// `error_scales` held, and what a restored pipeline's loss must be evaluated with next.
  std::array<value_type, terms> error_scales() const
    requires(terms > 0)
  {
    std::array<value_type, terms> out{};
    out.fill(std::numeric_limits<value_type>::quiet_NaN());
    std::apply([&](const auto&... p) {
      ([&] { if constexpr (requires { p.scales(); }) out = p.scales(); }(), ...);
    }, policies_);
    return out;
  }

  /// AdaptiveWeight's current multipliers (1 without one): what the last report's `weights` held,
  /// and what a restored pipeline's loss must be evaluated with next (apply(loss, guard)).
  std::array<value_type, terms> multipliers() const
    requires(terms > 0)
  {
    std::array<value_type, terms> out{};
    out.fill(value_type(1));
    std::apply([&](const auto&... p) {
      ([&] { if constexpr (requires { p.multipliers(); }) out = p.multipliers(); }(), ...);
    }, policies_);
    return out;
  }

 private:
  template <class Policy>
  static constexpr void check_get() {
    static_assert(pack::template count_type<Policy> > 0,
                  "steadyloss::Stabilizer::get<Policy>: no policy of this type is listed");
    static_assert(pack::template count_type<Policy> < 2,
                  "steadyloss::Stabilizer::get<Policy>: this policy type is listed twice: use get<I>, its "
                  "0-based position");
  }

  /// One rank's step inputs, before globalization.
  template <std::size_t M>
  struct step_inputs {
    double loss = 0, grad_norm = 0;
    std::array<double, M> values{}, weights{}, counts{};
    bool finite = true;
    bool has_terms = false;
    bool weighted_total = false;  ///< loss = sum of weights[i] * values[i] (a composed loss's total)
  };

  report_type update_scalars(value_type total, std::span<const value_type> values, value_type grad_norm) {
    step_inputs<terms> in;
    in.loss = static_cast<double>(total);
    in.grad_norm = static_cast<double>(grad_norm);
    in.finite = std::isfinite(total) && std::isfinite(grad_norm);
    for (std::size_t i = 0; i < values.size(); ++i) in.finite = in.finite && std::isfinite(values[i]);
    if constexpr (terms > 0)
      for (std::size_t i = 0; i < terms; ++i) in.values[i] = static_cast<double>(values[i]);
    in.weights.fill(1.0);
    in.counts.fill(1.0);  // plain scalars: each rank counts once
    in.has_terms = !values.empty();
    return run(globalize(in));
  }

  // The one update path, for one rank and many: every rank sends [non-finite flag, gradient norm,
  // loss, (value_i * count_i, count_i) for each term] through the Reducer's sum, and the step
  // runs on the global values: count-weighted means, the loss recomputed from them for a composed
  // loss. With one rank the sum changes nothing (local_reducer's is a no-op), and the rank's own
  // values are its global ones: they are sent with count 1 and kept as they are, even when
  // non-finite (there is no peer to protect), so that a single process sees exactly the values it
  // evaluated (no (v * c) / c rounding, no total recomputed in double from float terms).
  template <std::size_t M>
  step_context<terms> globalize(const step_inputs<M>& in) {
    const int ranks = reducer_.size();
    const bool peers = ranks > 1;
    // A non-finite contribution is sent as 0: the flag carries it, and peers' sums stay finite.
    const bool send = in.finite || !peers;
    std::array<double, 3 + 2 * M> buffer{};
    buffer[0] = in.finite ? 0.0 : 1.0;
    buffer[1] = send ? in.grad_norm : 0.0;
    buffer[2] = send ? in.loss : 0.0;
    for (std::size_t i = 0; i < M; ++i) {
      const double count = peers ? in.counts[i] : 1.0;
      buffer[3 + 2 * i] = send ? in.values[i] * count : 0.0;
      buffer[4 + 2 * i] = count;
    }
    reducer_.sum(buffer);

    step_context<terms> ctx;
    const double rank_count = ranks;
    ctx.finite = buffer[0] == 0.0;
    ctx.grad_norm = buffer[1] / rank_count;
    ctx.loss = buffer[2] / rank_count;
    double total = 0;
    for (std::size_t i = 0; i < M; ++i) {
      const double value = buffer[3 + 2 * i] / buffer[4 + 2 * i];
      total += in.weights[i] * value;
      ctx.finite = ctx.finite && (std::isfinite(value) || !peers);
      if constexpr (terms > 0) {
        ctx.values[i] = value;
        ctx.weights[i] = in.weights[i];
      }
    }
    if (peers && in.weighted_total) ctx.loss = total;
    ctx.has_terms = in.has_terms;
    return ctx;
  }

  report_type run(step_context<terms> ctx) {
    ctx.step = step_;
    ctx.effective = ctx.loss;
    std::apply([&](auto&... p) { (p.on_step(ctx), ...); }, policies_);
    report_type r;
    r.step = step_++;
    r.loss = static_cast<value_type>(ctx.loss);
    r.grad_norm = static_cast<value_type>(ctx.grad_norm);
    r.scale = static_cast<value_type>(ctx.scale);
    r.non_finite = !ctx.finite;
    r.is_spike = ctx.is_spike;
    r.level_shift = ctx.level_shift;
    r.skipped = ctx.skipped;
    r.smoothed = static_cast<value_type>(ctx.has_smoothed ? ctx.smoothed : ctx.effective);
    r.weights.fill(value_type(1));
    r.error_scales.fill(std::numeric_limits<value_type>::quiet_NaN());
    std::apply([&](const auto&... p) {
      ([&] { if constexpr (requires { p.fill(r); }) p.fill(r); }(), ...);
    }, policies_);
    return r;
  }

  [[no_unique_address]] R reducer_{};
  std::tuple<Policies...> policies_{};
  long long step_ = 0;
};

// The single-process pipeline, Stabilizer<Policies...> = BasicStabilizer<local_reducer,
// Policies...>, is defined in fwd.hpp, beside its declaration.

/// A multi-rank pipeline: with_reducer(sl::mpi_reducer{MPI_COMM_WORLD}, policies...).
template <Reducer R, class... Policies>
BasicStabilizer<R, Policies...> with_reducer(R reducer, Policies... policies) {
  return BasicStabilizer<R, Policies...>(std::move(reducer), std::move(policies)...);
}

/// Copies the Stabilizer's AdaptiveWeight multipliers into a composed loss. After
/// guard.restore(text) this is what puts the loss back where it was when the state was saved:
/// the loss keeps its multipliers outside the state, and without them the first resumed step
/// is evaluated with other weights (and every later decision differs).
template <class Loss, Reducer R, class... Policies>
void apply_weights(Loss& loss, const BasicStabilizer<R, Policies...>& guard) {
  constexpr std::size_t terms = BasicStabilizer<R, Policies...>::terms;
  static_assert(BasicStabilizer<R, Policies...>::has_adaptive_weight,
                "steadyloss::apply_weights(loss, guard): this Stabilizer has no AdaptiveWeight, so it holds no "
                "multipliers; leave the loss's multipliers alone (sl::apply(loss, guard) restores whatever it holds)");
  if constexpr (terms > 0 && BasicStabilizer<R, Policies...>::has_adaptive_weight) {
    static_assert(Loss::size == terms, "steadyloss::apply_weights: AdaptiveWeight<N> and the composed loss have "
                                       "different numbers of terms");
    const auto multipliers = guard.multipliers();
    loss.set_multipliers(std::span<const typename Loss::value_type>(multipliers));
  }
}

namespace detail {
template <class Term>
concept follows_error_scale = requires { requires Term::follows_error_scale; };

/// Checks, then copies, each finite scale into the term that follows an error scale (NaN: no
/// ErrorScale, the term keeps its own). check_error_scales throws before anything changes.
template <class Loss, class T, std::size_t N, class Visit>
void for_each_scaled_term(Loss& loss, const std::array<T, N>& scales, Visit visit) {
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ([&] {
      using Term = std::remove_cvref_t<decltype(loss.template term<I>())>;
      if constexpr (follows_error_scale<Term>)
        if (!std::isnan(scales[I])) visit(std::integral_constant<std::size_t, I>{}, loss.template term<I>());
    }(), ...);
  }(std::make_index_sequence<N>{});
}
template <class Loss, class T, std::size_t N>
void check_error_scales(const Loss& loss, const std::array<T, N>& scales) {
  for_each_scaled_term(loss, scales, [&](auto index, const auto& term) {
    constexpr std::size_t I = decltype(index)::value;
    if (loss.template reduction<I>() != reduction::mean)
      fail<invalid_parameter>("steadyloss::apply: term ", I, " (", name_of<std::remove_cvref_t<decltype(term)>>(),
                              ") follows its own mean value; give it reduction::mean");
    auto staged = term;
    staged.scale = scales[I];
    validate(staged);
  });
}
template <class Loss, class T, std::size_t N>
void set_error_scales(Loss& loss, const std::array<T, N>& scales) noexcept {
  for_each_scaled_term(loss, scales, [&](auto index, auto& term) { term.scale = scales[decltype(index)::value]; });
}
}  // namespace detail

/// Prepares the loss for the next step from this step's report: AdaptiveWeight's multipliers
/// (1 when the pipeline has none) and ErrorScale's scales into the terms that follow one
/// (AdaptiveHuber). Call it after every update(); without it the loss keeps the first step's.
template <class Loss, class T, std::size_t N>
void apply(Loss& loss, const step_report<T, N>& report) {
  if constexpr (N > 0) {
    static_assert(Loss::size == N, "steadyloss::apply: the Stabilizer's AdaptiveWeight<N>/ErrorScale<N> and the "
                                   "composed loss have different numbers of terms");
    detail::check_error_scales(loss, report.error_scales);  // everything checked before anything changes
    loss.set_multipliers(std::span<const T>(report.weights));
    detail::set_error_scales(loss, report.error_scales);
  }
}

/// After guard.restore(text): puts the Stabilizer's multipliers and error scales back into the
/// loss, which keeps them outside the state (without this the first resumed step is evaluated
/// with other weights or another delta, and every later decision differs).
template <class Loss, Reducer R, class... Policies>
void apply(Loss& loss, const BasicStabilizer<R, Policies...>& guard) {
  using guard_type = BasicStabilizer<R, Policies...>;
  if constexpr (guard_type::terms > 0) {
    static_assert(Loss::size == guard_type::terms, "steadyloss::apply: the Stabilizer's AdaptiveWeight<N>/"
                                                   "ErrorScale<N> and the composed loss have different numbers of terms");
    const auto scales = guard.error_scales();
    detail::check_error_scales(loss, scales);  // everything checked before anything changes
    if constexpr (guard_type::has_adaptive_weight) {
      const auto multipliers = guard.multipliers();
      loss.set_multipliers(std::span<const typename Loss::value_type>(multipliers));
    }
    detail::set_error_scales(loss, scales);
  }
}

/// Saves any single policy in the state format (for policies used outside a Stabilizer).
template <class Policy>
std::string save_state(const Policy& policy) {
  state_writer out;
  policy.save(out);
  return out.finish();
}
/// Restores a single policy; on error throws invalid_input and leaves the policy unchanged.
template <class Policy>
void restore_state(Policy& policy, std::string_view text) {
  state_reader in(text);
  Policy staged = policy;
  staged.load(in);
  in.finish();
  policy = std::move(staged);
}

}  // namespace steadyloss
