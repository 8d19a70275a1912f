// The policy lab's allocation kernel: split a budget B over winners with capacities w_i
// (0 <= x_i <= w_i, sum x_i = B) under one of the policies of DESIGN.md section 2.
//
// Two numeric modes, selected by the element type:
//   * exact (i64): capacities, budget, lot and amounts are int64 money/size units; the amounts
//     sum to the budget exactly and every money sum is integer arithmetic (128-bit products).
//     Fractions (cap) and leverage are int64 in units of 1e-8 (kAllocRateScale).
//   * float (double): everything is float64; cap and leverage are plain fractions / ratios.
//
// Policies and their exact definitions (integer mode; float mode drops the rounding):
//   queue            order winners by (score descending, index ascending); x_i = min(w_i, B - taken).
//   pro_rata         x_i = B * w_i / sum(w), floor plus largest remainder.
//   capped_pro_rata  K_i = floor(w_i * cap_i / 1e8) (integer cap); x_i = min(K_i, tau * w_i) with tau
//                    the real level at which the sum is B, then floor + largest remainder.
//   risk_aware       r_i = lambda_i * g(lambda_i) (g = linear: lambda, power:k: lambda^k,
//                    excess:l0: max(lambda - l0, 0)), computed in float64 with lambda = L_i / 1e8;
//                    rho_i = r_i / max_j r_j; rhohat_i = floor(rho_i * 2^32 + 0.5) (integer);
//                    pull weight v_i = round_half_up(w_i * rhohat_i / 2^(32 - s)) with
//                    s = clamp(62 - bit_width(sum w), 0, 32); x_i = min(K_i, tau * v_i)
//                    (K_i from cap as above, cap defaults to 1), floor + largest remainder.
//                    With constant leverage v_i = w_i * 2^s, so the result equals (capped) pro-rata.
//   weights          (pro_rata) x_i = min(w_i, tau * u_i) for weights u_i >= 0 (sum u in int64), tau by
//                    water-filling, floor + largest remainder; a winner with weight 0 pays nothing.
//   base             (capped_pro_rata, risk_aware, min_max_lots) b_i >= 0 (sum b in int64): the fraction
//                    taken is x_i / b_i instead of x_i / w_i. capped_pro_rata: K_i = min(w_i,
//                    floor(b_i * cap_i / 1e8)), x_i = min(K_i, tau * b_i); risk_aware: the same with
//                    v_i computed from b_i in place of w_i (cap defaults to 1: K_i = min(w_i, b_i));
//                    min_max_lots: the fraction of a winner's m-th lot is m * lot_i / b_i.
//   lots             (min_max_lots) one lot size per winner: L_i = floor(w_i / lot_i), and the m-th
//                    lot of winner i (amount lot_i) sits at fraction m * lot_i / b_i; lots are handed
//                    out in (fraction, index) order until the amounts reach B. A winner whose
//                    capacity is below one lot (or whose base is 0) cannot pay.
//   min_max_lots     L_i = floor(w_i / lot) whole lots; M = ceil(B / lot) lots are handed out one
//                    at a time, each to the winner whose next lot gives the smallest fraction
//                    m * lot / w_i (ties: smaller index). This minimises max x_i / w_i subject to
//                    whole lots and sum >= B; x_i = lot * m_i. Found by counting lots at two
//                    levels per pass (Newton steps on the count), not by handing lots out.
//   random_walk      dYdX v4 style: start = splitmix64(seed) mod n, walk i = start, start+1, ...
//                    (wrapping), x_i = min(w_i, B - taken).
// Largest remainder: the B - sum(floor) leftover units go one each to the uncapped winners
// with the largest remainders of tau * v_i (ties: smaller index).
//
// A budget above what the policy can raise (sum w; sum K over winners with v_i > 0;
// lot * sum L for min_max_lots) throws InvalidInput unless clip is set, in which case the
// budget is lowered to that amount. Every selection and water-fill is expected linear time:
// a random sample guesses two pivots around the answer, one exact pass settles everything
// outside them, and only the few items between go to an exact selection; the long passes run
// over eight fixed slices on req.threads threads (the result never depends on the thread count).
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "deleverage/fixed_point.hpp"
#include "deleverage/policy.hpp"

namespace deleverage {

struct RiskFunction {
  enum class Kind : int { Linear = 0, Power = 1, Excess = 2 };
  Kind kind = Kind::Linear;
  double param = 0.0;  // k for power (>= 0), l0 for excess (>= 0, in leverage units, e.g. 2.5)
};
// "linear", "power:k", "excess:l0".
RiskFunction parse_risk_function(std::string_view spec);

inline constexpr i64 kAllocRateScale = 100'000'000;

// T = i64 (exact) or double (float). Spans left empty mean "not given".
template <class T>
struct AllocRequest {
  Policy policy = Policy::ProRata;
  T budget = 0;
  std::span<const T> capacity;
  std::span<const double> score;  // queue: ranking key, higher closes first
  std::span<const T> leverage;    // risk_aware: exact mode in 1e-8 units
  std::span<const T> cap;         // capped_pro_rata (required), risk_aware (optional); size 1 broadcasts
  std::optional<T> lot;           // min_max_lots (> 0): one lot size for every winner
  std::span<const T> lots;        // min_max_lots: one lot size per winner (> 0), instead of lot
  std::span<const T> weights;     // pro_rata (optional): x_i = min(w_i, tau * weight_i) instead of tau * w_i
  std::span<const T> base;        // capped_pro_rata, risk_aware, min_max_lots (optional): the
                                  // denominator of "fraction taken" (default: capacity)
  RiskFunction g{};
  std::uint64_t seed = 0;  // random_walk
  bool clip = false;
  int threads = 0;  // threads for the long passes: 0 = every core (at most 8); results never depend on it
};

std::vector<i64> allocate(const AllocRequest<i64>& req);
std::vector<double> allocate(const AllocRequest<double>& req);

// The random walk's deterministic start: splitmix64(seed) mod n (n > 0).
std::uint64_t random_walk_start(std::uint64_t seed, std::uint64_t n);

}  // namespace deleverage
