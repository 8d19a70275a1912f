// The allocation kernel (see allocate.hpp for the definitions). Everything is selection by
// random-pivot partitioning (expected linear time); nothing sorts the winners.
//
// Where `double` appears, and why it never touches an exact amount:
//  * every template is instantiated twice: T = i64 (exact mode, integer budget and
//    capacities, amounts summing to the budget exactly) and T = double (float mode, used only
//    when the caller passes float arrays and asks for float amounts);
//  * the queue's ranking score is an ordering key supplied by the caller (float64), never
//    an amount;
//  * risk_aware's weights lambda * g(lambda) are computed in double and rounded to integer
//    weights before any exact amount is derived from them (documented in allocate.py);
//  * num_str formats values for error messages.
#include "deleverage/allocate.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <limits>
#include <type_traits>

namespace deleverage {

namespace {

using u32 = std::uint32_t;

// ---------------------------------------------------------------- arithmetic helpers

inline u128 mulw(u64 a, u64 b) { return static_cast<u128>(a) * b; }
inline double mulw(double a, double b) { return a * b; }

// floor(n / d) and n mod d for a 128-bit n whose quotient fits in 64 bits (n >> 64 < d).
inline u64 div128(u128 n, u64 d, u64& rem) {
#if defined(__x86_64__)
  u64 q, r;
  const u64 hi = static_cast<u64>(n >> 64), lo = static_cast<u64>(n);
  __asm__("divq %4" : "=a"(q), "=d"(r) : "a"(lo), "d"(hi), "rm"(d) : "cc");
  rem = r;
  return q;
#else
  rem = static_cast<u64>(n % d);
  return static_cast<u64>(n / d);
#endif
}

// Deterministic pivot source (the result never depends on it, only the running time).
struct Rng {
  u64 s = 0x2545F4914F6CDD1Dull;
  u64 next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }
};

u64 splitmix64(u64 x) {
  u64 z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string at(const char* field, std::size_t i) { return std::string(field) + "[" + std::to_string(i) + "]"; }

template <class T>
std::string num_str(T v) {
  if constexpr (std::is_same_v<T, double>) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
  } else {
    return std::to_string(v);
  }
}

// ---------------------------------------------------------------- weighted selection
// Reorders a[0, n) so that a[0, p) are exactly the items ordered before a[p] by `before`
// (in no particular order) and returns p, the first item at which the running weight in
// `before` order reaches target (0 < target <= total weight). `acc` gets the weight of a[0, p).
template <class Item, class Before, class Weight, class S>
std::size_t weighted_select(std::vector<Item>& a, Before before, Weight wt, S target, S& acc) {
  Rng rng;
  std::size_t lo = 0, hi = a.size();
  acc = 0;
  while (hi - lo > 24) {
    const Item pivot = a[lo + rng.below(hi - lo)];
    auto mid_it = std::partition(a.begin() + static_cast<std::ptrdiff_t>(lo), a.begin() + static_cast<std::ptrdiff_t>(hi),
                                 [&](const Item& x) { return before(x, pivot); });
    const std::size_t mid = static_cast<std::size_t>(mid_it - a.begin());
    S s = 0;
    for (std::size_t j = lo; j < mid; ++j) s += wt(a[j]);
    if (acc + s >= target) {
      hi = mid;
      continue;
    }
    acc += s;
    // the pivot is the first item of [mid, hi) in order: bring it to mid
    std::size_t pj = mid;
    for (std::size_t j = mid; j < hi; ++j)
      if (!before(pivot, a[j]) && !before(a[j], pivot)) { pj = j; break; }
    std::swap(a[mid], a[pj]);
    if (acc + wt(a[mid]) >= target) return mid;
    acc += wt(a[mid]);
    lo = mid + 1;
  }
  std::sort(a.begin() + static_cast<std::ptrdiff_t>(lo), a.begin() + static_cast<std::ptrdiff_t>(hi), before);
  for (std::size_t j = lo; j < hi; ++j) {
    if (acc + wt(a[j]) >= target || j + 1 == hi) return j;  // last item: float round-off
    acc += wt(a[j]);
  }
  return hi - 1;  // unreachable for a valid target
}

// ---------------------------------------------------------------- validation

template <class T>
void check_capacity(std::span<const T> w) {
  for (std::size_t i = 0; i < w.size(); ++i) {
    if constexpr (std::is_same_v<T, double>) {
      if (!std::isfinite(w[i])) throw InvalidInput(at("capacity", i) + ": " + num_str(w[i]) + " is not a finite number");
    }
    if (w[i] < 0) throw InvalidInput(at("capacity", i) + ": " + num_str(w[i]) + " must not be negative");
  }
}

template <class T>
void check_length(std::span<const T> a, std::size_t n, const char* field, bool allow_scalar) {
  if (a.size() == n || (allow_scalar && a.size() == 1)) return;
  throw InvalidInput(std::string(field) + " has " + std::to_string(a.size()) + " entries but capacity has " + std::to_string(n) +
                     (allow_scalar ? " (give one value or one per winner)" : ""));
}

void require(bool given, const char* field, AllocPolicy p, bool needed) {
  if (needed && !given) throw InvalidInput(std::string(field) + " is required by policy '" + alloc_policy_name(p) + "'");
  if (!needed && given) throw InvalidInput(std::string(field) + " is not used by policy '" + alloc_policy_name(p) + "'");
}

template <class T>
void check_cap(std::span<const T> cap) {
  for (std::size_t i = 0; i < cap.size(); ++i) {
    if constexpr (std::is_same_v<T, double>) {
      if (!(cap[i] >= 0.0 && cap[i] <= 1.0))
        throw InvalidInput(at("cap", i) + ": " + num_str(cap[i]) + " is outside [0, 1]");
    } else {
      if (cap[i] < 0 || cap[i] > kAllocRateScale)
        throw InvalidInput(at("cap", i) + ": " + num_str(cap[i]) + " is outside [0, 1e8] (units of 1e-8)");
    }
  }
}

template <class T>
T budget_or_clip(T budget, T reachable, const AllocRequest<T>& req) {
  if (budget <= reachable) return budget;
  if (req.clip) return reachable;
  throw InvalidInput("budget " + num_str(budget) + " exceeds what policy '" + alloc_policy_name(req.policy) + "' can raise (" +
                     num_str(reachable) + "); pass clip=True to raise only that much");
}

// ---------------------------------------------------------------- queue and random walk

template <class T>
std::vector<T> queue_alloc(const AllocRequest<T>& req, T budget) {
  const auto w = req.capacity;
  std::vector<T> x(w.size(), T{0});
  if (budget == 0) return x;
  struct Item {
    double s;
    T w;
    u32 i;
  };
  std::vector<Item> items;
  items.reserve(w.size());
  for (std::size_t i = 0; i < w.size(); ++i)
    if (w[i] > 0) items.push_back({req.score[i], w[i], static_cast<u32>(i)});
  auto before = [](const Item& a, const Item& b) { return a.s != b.s ? a.s > b.s : a.i < b.i; };
  T acc{};
  const std::size_t p = weighted_select(items, before, [](const Item& a) { return a.w; }, budget, acc);
  for (std::size_t j = 0; j < p; ++j) x[items[j].i] = items[j].w;
  x[items[p].i] = std::min(items[p].w, static_cast<T>(budget - acc));
  return x;
}

template <class T>
std::vector<T> random_walk_alloc(const AllocRequest<T>& req, T budget) {
  const auto w = req.capacity;
  const std::size_t n = w.size();
  std::vector<T> x(n, T{0});
  if (budget == 0 || n == 0) return x;
  const std::size_t start = static_cast<std::size_t>(random_walk_start(req.seed, n));
  T left = budget;
  for (std::size_t k = 0; k < n && left > 0; ++k) {
    const std::size_t i = (start + k) % n;
    const T take = std::min(w[i], left);
    x[i] = take;
    left -= take;
  }
  return x;
}

// ---------------------------------------------------------------- water-filling
// x_i = min(K_i, tau * v_i), sum x = budget. Exact: K, v are u64 and the result is rounded by
// largest remainder; float: doubles.

template <class V>
struct WfItem {
  V k;
  V v;
};

// Returns (q, Vsum): tau = q / Vsum (Vsum == 0: everything saturated).
template <class V>
std::pair<V, V> water_level(const std::vector<V>& K, const std::vector<V>& v, V budget) {
  std::vector<WfItem<V>> a;
  a.reserve(K.size());
  for (std::size_t i = 0; i < K.size(); ++i)
    if (K[i] > 0 && v[i] > 0) a.push_back({K[i], v[i]});
  Rng rng;
  V A = 0, Vs = 0;
  std::size_t lo = 0, hi = a.size();
  auto first = [&](std::size_t j) { return a.begin() + static_cast<std::ptrdiff_t>(j); };
  while (lo < hi) {
    const WfItem<V> p = a[lo + rng.below(hi - lo)];
    // t_j = k_j / v_j compared with t_p: k_j * v_p vs k_p * v_j
    auto m1 = std::partition(first(lo), first(hi), [&](const WfItem<V>& it) { return mulw(it.k, p.v) < mulw(p.k, it.v); });
    auto m2 = std::partition(m1, first(hi), [&](const WfItem<V>& it) { return !(mulw(p.k, it.v) < mulw(it.k, p.v)); });
    const std::size_t mid1 = static_cast<std::size_t>(m1 - a.begin()), mid2 = static_cast<std::size_t>(m2 - a.begin());
    V kl = 0, vg = 0, ve = 0;
    for (std::size_t j = lo; j < mid2; ++j) kl += a[j].k;
    for (std::size_t j = mid1; j < mid2; ++j) ve += a[j].v;
    for (std::size_t j = mid2; j < hi; ++j) vg += a[j].v;
    // F(t_p) = A + kl + t_p * (Vs + vg) <= budget ?
    const bool at_most = mulw(static_cast<V>(A + kl), p.v) + mulw(p.k, static_cast<V>(Vs + vg)) <= mulw(budget, p.v);
    if (at_most) {
      A += kl;
      lo = mid2;
    } else {
      Vs += vg + ve;
      hi = mid1;
    }
  }
  if constexpr (std::is_same_v<V, double>) {
    return {Vs > 0 ? std::max(0.0, budget - A) : 0.0, Vs};
  } else {
    return {Vs > 0 ? budget - A : 0, Vs};
  }
}

// uniform: K == v (plain pro-rata), so tau = budget / sum(v) without a search.
std::vector<i64> water_fill_exact(const std::vector<u64>& K, const std::vector<u64>& v, u64 budget, bool uniform = false) {
  const std::size_t n = K.size();
  std::vector<i64> x(n, 0);
  if (budget == 0) return x;
  std::pair<u64, u64> level;
  if (uniform) {
    u64 total = 0;
    for (u64 vi : v) total += vi;
    level = budget == total ? std::pair<u64, u64>{0, 0} : std::pair<u64, u64>{budget, total};
  } else {
    level = water_level(K, v, budget);
  }
  const auto [q, V] = level;
  struct Rem {
    u64 r;
    u32 i;
  };
  std::vector<Rem> rems;
  u64 given = 0;  // over the uncapped winners
  for (std::size_t i = 0; i < n; ++i) {
    if (K[i] == 0 || v[i] == 0) continue;
    if (V == 0 || mulw(K[i], V) <= mulw(q, v[i])) {  // saturated: t_i <= tau
      x[i] = static_cast<i64>(K[i]);
      continue;
    }
    u64 r;
    const u64 f = div128(mulw(q, v[i]), V, r);
    x[i] = static_cast<i64>(f);
    given += f;
    if (r) rems.push_back({r, static_cast<u32>(i)});
  }
  const std::size_t extra = static_cast<std::size_t>(q - given);
  if (extra > 0) {
    auto larger = [](const Rem& a, const Rem& b) { return a.r != b.r ? a.r > b.r : a.i < b.i; };
    if (extra < rems.size())
      std::nth_element(rems.begin(), rems.begin() + static_cast<std::ptrdiff_t>(extra - 1), rems.end(), larger);
    for (std::size_t j = 0; j < extra; ++j) ++x[rems[j].i];
  }
  return x;
}

std::vector<double> water_fill_float(const std::vector<double>& K, const std::vector<double>& v, double budget) {
  const std::size_t n = K.size();
  std::vector<double> x(n, 0.0);
  if (budget == 0) return x;
  const auto [q, V] = water_level(K, v, budget);
  const double tau = V > 0 ? q / V : 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    if (K[i] <= 0 || v[i] <= 0) continue;
    x[i] = V > 0 ? std::min(K[i], tau * v[i]) : K[i];
  }
  return x;
}

// Integer caps K_i = floor(w_i * c_i / 1e8) without a 128-bit division.
u64 cap_amount(i64 w, i64 c) {
  const u64 a = static_cast<u64>(w) / kAllocRateScale, b = static_cast<u64>(w) % kAllocRateScale;
  return a * static_cast<u64>(c) + b * static_cast<u64>(c) / kAllocRateScale;
}

double risk_weight(double lam, const RiskFunction& g) {
  switch (g.kind) {
    case RiskFunction::Kind::Linear: return lam * lam;
    case RiskFunction::Kind::Power: return lam * std::pow(lam, g.param);
    case RiskFunction::Kind::Excess: return lam * std::max(lam - g.param, 0.0);
  }
  return 0.0;
}

// rho_i = r_i / max r (0 everywhere when every weight is 0).
template <class T>
std::vector<double> risk_shares(const AllocRequest<T>& req) {
  const std::size_t n = req.capacity.size();
  std::vector<double> r(n);
  double rmax = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    double lam;
    if constexpr (std::is_same_v<T, double>) {
      lam = req.leverage[i];
      if (!std::isfinite(lam)) throw InvalidInput(at("leverage", i) + ": " + num_str(lam) + " is not a finite number");
    } else {
      lam = static_cast<double>(req.leverage[i]) / static_cast<double>(kAllocRateScale);
    }
    if (lam < 0) throw InvalidInput(at("leverage", i) + ": " + num_str(req.leverage[i]) + " must not be negative");
    r[i] = risk_weight(lam, req.g);
    if (!std::isfinite(r[i])) throw InvalidInput(at("leverage", i) + ": risk weight leverage*g(leverage) overflows float64");
    rmax = std::max(rmax, r[i]);
  }
  for (auto& ri : r) ri = rmax > 0 ? ri / rmax : 0.0;
  return r;
}

// ---------------------------------------------------------------- min_max_lots
// Breakpoint (m, w): the fraction m * lot / w of the m-th lot of a winner with capacity w.

template <class T>
struct Lots;
template <>
struct Lots<i64> {
  static int cmp(u64 ma, i64 wa, u64 mb, i64 wb) {  // sign of ma/wa - mb/wb
    const u128 l = mulw(ma, static_cast<u64>(wb)), r = mulw(mb, static_cast<u64>(wa));
    return l < r ? -1 : (l > r ? 1 : 0);
  }
  // floor(m * w / d) (the quotient fits: m * w / d <= max lots)
  static u64 muldiv(u64 m, i64 w, i64 d) {
    u64 r;
    return div128(mulw(m, static_cast<u64>(w)), static_cast<u64>(d), r);
  }
};
template <>
struct Lots<double> {
  static int cmp(u64 ma, double wa, u64 mb, double wb) {
    const double l = static_cast<double>(ma) * wb, r = static_cast<double>(mb) * wa;
    return l < r ? -1 : (l > r ? 1 : 0);
  }
  static u64 muldiv(u64 m, double w, double d) {
    const double f = std::floor(static_cast<double>(m) * w / d);
    return f <= 0 ? 0 : static_cast<u64>(f);
  }
};

template <class T>
std::vector<T> min_max_lots_alloc(const AllocRequest<T>& req, T budget) {
  using L = Lots<T>;
  const auto w = req.capacity;
  const T lot = *req.lot;
  const std::size_t n = w.size();
  std::vector<u64> maxl(n, 0);
  u64 total_lots = 0;
  T wsum = 0;  // over winners with at least one lot
  for (std::size_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, double>) {
      const double l = std::floor(w[i] / lot);
      if (l >= 9007199254740992.0) throw InvalidInput(at("capacity", i) + ": more than 2^53 lots of size lot");
      maxl[i] = static_cast<u64>(l);
    } else {
      maxl[i] = static_cast<u64>(w[i] / lot);
    }
    total_lots += maxl[i];
    if (maxl[i]) wsum += w[i];
  }
  T reachable;
  if constexpr (std::is_same_v<T, double>) {
    reachable = lot * static_cast<double>(total_lots);
  } else {
    reachable = static_cast<i64>(static_cast<u64>(lot) * total_lots);  // <= sum w
  }
  u64 M;
  if constexpr (std::is_same_v<T, double>) {
    M = static_cast<u64>(std::ceil(budget / lot));
    if (budget > reachable || M > total_lots) {
      (void)budget_or_clip(budget, reachable, req);
      M = total_lots;
    }
  } else {
    budget = budget_or_clip(budget, reachable, req);
    M = static_cast<u64>(budget / lot) + (budget % lot != 0 ? 1 : 0);
  }
  std::vector<u64> a(n, 0), b(n, 0);
  u64 r = M;
  if (M == total_lots) {
    a = maxl;
    r = 0;
  } else if (M > 0) {
    // base level h_c = M*lot/wsum: a_i = floor(M w_i / wsum) lots lie at or below it; upper
    // level (M + n')*lot/wsum holds at least M lots.
    u64 nlive = 0, suma = 0, sumb = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (maxl[i]) ++nlive;
    for (std::size_t i = 0; i < n; ++i) {
      if (!maxl[i]) continue;
      a[i] = std::min(maxl[i], L::muldiv(M, w[i], wsum));
      const u128 up = static_cast<u128>(M) + nlive;
      b[i] = up >= total_lots ? maxl[i] : std::min(maxl[i], L::muldiv(static_cast<u64>(up), w[i], wsum));
      b[i] = std::max(b[i], a[i]);
      suma += a[i];
      sumb += b[i];
    }
    if (suma > M) std::fill(a.begin(), a.end(), 0), suma = 0;  // float round-off only
    if (sumb < M) b = maxl;                                     // float round-off only
    r = M - suma;
    std::vector<u32> active;
    for (std::size_t i = 0; i < n; ++i)
      if (b[i] > a[i]) active.push_back(static_cast<u32>(i));
    struct Bp {
      u64 m;
      T w;
      u32 i;
      u64 c;
    };
    auto before = [](const Bp& x, const Bp& y) {
      const int c = L::cmp(x.m, x.w, y.m, y.w);
      return c != 0 ? c < 0 : x.i < y.i;
    };
    std::vector<Bp> items;
    std::vector<u64> le(n), ls(n);
    while (r > 0) {
      bool singles = true;
      for (u32 i : active)
        if (b[i] - a[i] > 1) { singles = false; break; }
      items.clear();
      if (singles) {
        for (u32 i : active) items.push_back({a[i] + 1, w[i], i, 1});
        std::nth_element(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(r - 1), items.end(), before);
        for (u64 j = 0; j < r; ++j) ++a[items[j].i];
        r = 0;
        break;
      }
      // pivot: weighted median (by candidate count) of each winner's median candidate
      u64 total = 0;
      for (u32 i : active) {
        const u64 c = b[i] - a[i];
        items.push_back({a[i] + (c + 1) / 2, w[i], i, c});
        total += c;
      }
      u64 acc = 0;
      const std::size_t p = weighted_select(items, before, [](const Bp& x) { return x.c; }, (total + 1) / 2, acc);
      const u64 mp = items[p].m;
      const T wp = items[p].w;
      u64 sless = 0, sle = 0;
      for (u32 i : active) {
        // lots of i at or below the pivot level, and strictly below it
        u64 k = std::min(L::muldiv(mp, w[i], wp), b[i]);
        while (k < b[i] && L::cmp(k + 1, w[i], mp, wp) <= 0) ++k;
        while (k > a[i] && L::cmp(k, w[i], mp, wp) > 0) --k;
        k = std::max(k, a[i]);
        le[i] = k;
        ls[i] = (k > a[i] && L::cmp(k, w[i], mp, wp) == 0) ? k - 1 : k;
        sless += ls[i] - a[i];
        sle += le[i] - a[i];
      }
      if (sless >= r) {
        for (u32 i : active) b[i] = ls[i];
      } else if (sle >= r) {
        // the level is the pivot's: the winners with a lot exactly there take one, by index
        r -= sless;
        std::vector<u32> tied;
        for (u32 i : active) {
          a[i] = ls[i];
          if (le[i] > ls[i]) tied.push_back(i);
        }
        std::nth_element(tied.begin(), tied.begin() + static_cast<std::ptrdiff_t>(r - 1), tied.end());
        for (u64 j = 0; j < r; ++j) ++a[tied[j]];
        r = 0;
        break;
      } else {
        for (u32 i : active) a[i] = le[i];
        r -= sle;
      }
      std::erase_if(active, [&](u32 i) { return b[i] <= a[i]; });
    }
  }
  std::vector<T> x(n, T{0});
  for (std::size_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, double>) {
      x[i] = lot * static_cast<double>(a[i]);
    } else {
      x[i] = static_cast<i64>(static_cast<u64>(lot) * a[i]);
    }
  }
  return x;
}

// ---------------------------------------------------------------- the entry point

template <class T>
std::vector<T> allocate_impl(const AllocRequest<T>& req) {
  const auto w = req.capacity;
  const std::size_t n = w.size();
  const AllocPolicy pol = req.policy;
  if (n >= (std::size_t{1} << 32)) throw InvalidInput("capacity: at most 2^32 - 1 winners");
  if constexpr (std::is_same_v<T, double>) {
    if (!std::isfinite(req.budget)) throw InvalidInput("budget: " + num_str(req.budget) + " is not a finite number");
  }
  if (req.budget < 0) throw InvalidInput("budget: " + num_str(req.budget) + " must not be negative");
  check_capacity(w);
  require(!req.score.empty(), "score", pol, pol == AllocPolicy::Queue);
  require(!req.leverage.empty(), "leverage", pol, pol == AllocPolicy::RiskAware);
  if (pol != AllocPolicy::RiskAware) require(!req.cap.empty(), "cap", pol, pol == AllocPolicy::CappedProRata);
  require(req.lot.has_value(), "lot", pol, pol == AllocPolicy::MinMaxLots);
  if (pol == AllocPolicy::MinMaxLots) {
    if constexpr (std::is_same_v<T, double>) {
      if (!(std::isfinite(*req.lot) && *req.lot > 0)) throw InvalidInput("lot: " + num_str(*req.lot) + " must be a positive finite number");
    } else {
      if (*req.lot <= 0) throw InvalidInput("lot: " + num_str(*req.lot) + " must be positive");
    }
  }
  if (pol != AllocPolicy::RiskAware && req.g.kind != RiskFunction::Kind::Linear)
    throw InvalidInput(std::string("g is not used by policy '") + alloc_policy_name(pol) + "'");
  if (!req.score.empty()) {
    check_length(req.score, n, "score", false);
    for (std::size_t i = 0; i < n; ++i)
      if (std::isnan(req.score[i])) throw InvalidInput(at("score", i) + ": NaN cannot be ranked");
  }
  if (!req.leverage.empty()) check_length(req.leverage, n, "leverage", false);
  if (!req.cap.empty()) {
    check_length(req.cap, n, "cap", true);
    check_cap(req.cap);
  }

  // total capacity (exact mode: must fit in int64)
  T total{};
  if constexpr (std::is_same_v<T, double>) {
    for (double v : w) total += v;
    if (!std::isfinite(total)) throw InvalidInput("capacity: the total is not a finite number");
  } else {
    u128 t = 0;
    for (i64 v : w) t += static_cast<u64>(v);
    if (t > static_cast<u128>(std::numeric_limits<i64>::max()))
      throw ArithmeticOverflow("capacity: the total capacity does not fit in int64");
    total = static_cast<i64>(t);
  }

  switch (pol) {
    case AllocPolicy::Queue: return queue_alloc(req, budget_or_clip(req.budget, total, req));
    case AllocPolicy::RandomWalk: return random_walk_alloc(req, budget_or_clip(req.budget, total, req));
    case AllocPolicy::MinMaxLots: return min_max_lots_alloc(req, req.budget);
    case AllocPolicy::ProRata: {
      const T budget = budget_or_clip(req.budget, total, req);
      if constexpr (std::is_same_v<T, double>) {
        std::vector<double> x(n, 0.0);
        if (budget > 0)
          for (std::size_t i = 0; i < n; ++i) x[i] = std::min(w[i], budget * (w[i] / total));
        return x;
      } else {
        // no winner saturates below the full budget: tau = B / W, straight to the rounding
        std::vector<u64> K(n);
        for (std::size_t i = 0; i < n; ++i) K[i] = static_cast<u64>(w[i]);
        return water_fill_exact(K, K, static_cast<u64>(budget), true);
      }
    }
    case AllocPolicy::CappedProRata:
    case AllocPolicy::RiskAware: {
      const auto cap = req.cap;
      auto cap_at = [&](std::size_t i) { return cap.size() == 1 ? cap[0] : cap[i]; };
      std::vector<double> rho;
      if (pol == AllocPolicy::RiskAware) rho = risk_shares(req);
      if constexpr (std::is_same_v<T, double>) {
        std::vector<double> K(n), v(n);
        double reach = 0.0;
        for (std::size_t i = 0; i < n; ++i) {
          K[i] = cap.empty() ? w[i] : w[i] * cap_at(i);
          v[i] = rho.empty() ? w[i] : w[i] * rho[i];
          if (v[i] > 0) reach += K[i];
        }
        return water_fill_float(K, v, budget_or_clip(req.budget, reach, req));
      } else {
        std::vector<u64> K(n), v(n);
        const int s = std::clamp(62 - static_cast<int>(std::bit_width(static_cast<u64>(total))), 0, 32);
        u64 reach = 0;
        for (std::size_t i = 0; i < n; ++i) {
          const u64 wi = static_cast<u64>(w[i]);
          K[i] = cap.empty() ? wi : cap_amount(w[i], cap_at(i));
          if (rho.empty()) {
            v[i] = wi;
          } else {
            const u64 rh = static_cast<u64>(std::floor(rho[i] * 4294967296.0 + 0.5));
            const u128 prod = mulw(wi, rh);
            v[i] = s == 32 ? static_cast<u64>(prod) : static_cast<u64>((prod + (u128{1} << (31 - s))) >> (32 - s));
          }
          if (v[i] > 0) reach += K[i];
        }
        return water_fill_exact(K, v, static_cast<u64>(budget_or_clip(req.budget, static_cast<i64>(reach), req)));
      }
    }
  }
  throw InvalidInput("unknown policy");
}

}  // namespace

AllocPolicy parse_alloc_policy(std::string_view name) {
  if (name == "queue") return AllocPolicy::Queue;
  if (name == "pro_rata") return AllocPolicy::ProRata;
  if (name == "capped_pro_rata") return AllocPolicy::CappedProRata;
  if (name == "risk_aware") return AllocPolicy::RiskAware;
  if (name == "min_max_lots") return AllocPolicy::MinMaxLots;
  if (name == "random_walk") return AllocPolicy::RandomWalk;
  throw InvalidInput("policy: unknown policy '" + std::string(name) +
                     "' (expected queue, pro_rata, capped_pro_rata, risk_aware, min_max_lots or random_walk)");
}

const char* alloc_policy_name(AllocPolicy p) {
  switch (p) {
    case AllocPolicy::Queue: return "queue";
    case AllocPolicy::ProRata: return "pro_rata";
    case AllocPolicy::CappedProRata: return "capped_pro_rata";
    case AllocPolicy::RiskAware: return "risk_aware";
    case AllocPolicy::MinMaxLots: return "min_max_lots";
    case AllocPolicy::RandomWalk: return "random_walk";
  }
  return "?";
}

RiskFunction parse_risk_function(std::string_view spec) {
  RiskFunction g;
  if (spec == "linear") return g;
  const auto colon = spec.find(':');
  const std::string_view kind = spec.substr(0, colon);
  if (colon == std::string_view::npos || (kind != "power" && kind != "excess"))
    throw InvalidInput("g: unknown risk function '" + std::string(spec) + "' (expected linear, power:k or excess:l0)");
  const std::string arg(spec.substr(colon + 1));
  char* end = nullptr;
  const double v = std::strtod(arg.c_str(), &end);
  if (arg.empty() || end != arg.c_str() + arg.size() || !std::isfinite(v) || v < 0)
    throw InvalidInput("g: the parameter of '" + std::string(spec) + "' must be a finite number >= 0");
  g.kind = kind == "power" ? RiskFunction::Kind::Power : RiskFunction::Kind::Excess;
  g.param = v;
  return g;
}

std::uint64_t random_walk_start(std::uint64_t seed, std::uint64_t n) { return splitmix64(seed) % n; }

std::vector<i64> allocate(const AllocRequest<i64>& req) { return allocate_impl(req); }
std::vector<double> allocate(const AllocRequest<double>& req) { return allocate_impl(req); }

}  // namespace deleverage
