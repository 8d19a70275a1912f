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
#include <exception>
#include <limits>
#include <memory>
#include <thread>
#include <type_traits>

#include "deleverage/detail/parallel.hpp"

namespace deleverage {

namespace {

using u32 = std::uint32_t;

// ---------------------------------------------------------------- arithmetic helpers

inline u128 mulw(u64 a, u64 b) { return static_cast<u128>(a) * b; }
inline double mulw(double a, double b) { return a * b; }
// a < b through the borrow of a - b: compilers keep this free of branches, where they often
// branch on a 128-bit `<`
inline bool less(u128 a, u128 b) {
  u128 d;
  return __builtin_sub_overflow(a, b, &d);
}
inline bool less(double a, double b) { return a < b; }

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
    auto mid_it =
        std::partition(a.begin() + static_cast<std::ptrdiff_t>(lo), a.begin() + static_cast<std::ptrdiff_t>(hi),
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
      if (!before(pivot, a[j]) && !before(a[j], pivot)) {
        pj = j;
        break;
      }
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

// Checks every capacity and returns their sum, in the same pass (exact mode: in 128 bits, the
// caller checks that it fits in int64 after the other arguments).
template <class T>
auto check_capacity(std::span<const T> w) {
  std::conditional_t<std::is_same_v<T, double>, double, u128> total = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    if constexpr (std::is_same_v<T, double>) {
      if (!std::isfinite(w[i]))
        throw InvalidInput(at("capacity", i) + ": " + num_str(w[i]) + " is not a finite number");
    }
    if (w[i] < 0) throw InvalidInput(at("capacity", i) + ": " + num_str(w[i]) + " must not be negative");
    if constexpr (std::is_same_v<T, double>) {
      total += w[i];
    } else {
      total += static_cast<u64>(w[i]);
    }
  }
  return total;
}

template <class T>
void check_length(std::span<const T> a, std::size_t n, const char* field, bool allow_scalar) {
  if (a.size() == n || (allow_scalar && a.size() == 1)) return;
  throw InvalidInput(std::string(field) + " has " + std::to_string(a.size()) + " entries but capacity has " +
                     std::to_string(n) + (allow_scalar ? " (give one value or one per winner)" : ""));
}

void require(bool given, const char* field, Policy p, bool needed) {
  if (needed && !given) throw InvalidInput(std::string(field) + " is required by policy '" + policy_name(p) + "'");
  if (!needed && given) throw InvalidInput(std::string(field) + " is not used by policy '" + policy_name(p) + "'");
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
void check_lot(T lot, const char* field) {
  if constexpr (std::is_same_v<T, double>) {
    if (!(std::isfinite(lot) && lot > 0))
      throw InvalidInput(std::string(field) + ": " + num_str(lot) + " must be a positive finite number");
  } else {
    if (lot <= 0) throw InvalidInput(std::string(field) + ": " + num_str(lot) + " must be positive");
  }
}

// weights and base: one non-negative value per winner whose sum fits in int64 (exact mode:
// the water level divides by sums of them) or is finite (float mode).
template <class T>
void check_side_sum(std::span<const T> a, std::size_t n, const char* field) {
  if (a.empty()) return;
  check_length(a, n, field, false);
  long double total = 0;
  u128 exact = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, double>) {
      if (!std::isfinite(a[i])) throw InvalidInput(at(field, i) + ": " + num_str(a[i]) + " is not a finite number");
      total += a[i];
    } else {
      exact += static_cast<u64>(a[i] < 0 ? 0 : a[i]);
    }
    if (a[i] < 0) throw InvalidInput(at(field, i) + ": " + num_str(a[i]) + " must not be negative");
  }
  if constexpr (std::is_same_v<T, double>) {
    if (!std::isfinite(static_cast<double>(total)))
      throw InvalidInput(std::string(field) + ": the total is not a finite number");
  } else {
    if (exact > static_cast<u128>(std::numeric_limits<i64>::max()))
      throw ArithmeticOverflow(std::string(field) + ": the total does not fit in int64");
  }
}

template <class T>
T budget_or_clip(T budget, T reachable, const AllocRequest<T>& req) {
  if (budget <= reachable) return budget;
  if (req.clip) return reachable;
  throw InvalidInput("budget " + num_str(budget) + " exceeds what policy '" + policy_name(req.policy) +
                     "' can raise (" + num_str(reachable) + "); pass clip=True to raise only that much");
}

// ---------------------------------------------------------------- threads
// The long passes run over kParts fixed slices of the index range, handed out to up to
// kParts threads as they free up (on a shared machine a static split waits for the slowest
// thread). The slices do not depend on the thread count, so neither do the results: integer
// sums are exact anyway, float sums are always added slice by slice in the same order, and
// lists collected per slice are joined in slice (hence index) order.
constexpr std::size_t kParts = 8;
constexpr std::size_t kParallelMin = std::size_t{1} << 16;  // below this a thread costs more than it saves

// The request's thread count, set by allocate() for the duration of the call on the calling
// thread (the slices are only ever started from it), so that the many passes below need not
// carry it as a parameter.
thread_local int tl_pass_threads = 1;

inline int pass_threads() { return tl_pass_threads; }

class PassThreadsScope {
 public:
  explicit PassThreadsScope(int requested) : saved_(tl_pass_threads) {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    const unsigned want = requested > 0 ? static_cast<unsigned>(requested) : cores;
    tl_pass_threads = static_cast<int>(std::clamp<unsigned>(want, 1, kParts));
  }
  ~PassThreadsScope() { tl_pass_threads = saved_; }
  PassThreadsScope(const PassThreadsScope&) = delete;
  PassThreadsScope& operator=(const PassThreadsScope&) = delete;

 private:
  int saved_;
};

// fn(part, begin, end) for each slice; an exception from the lowest slice wins (validation
// reports the first bad index).
template <class Fn>
void for_slices(std::size_t n, Fn&& fn) {
  if (n < kParallelMin || pass_threads() == 1) {
    for (std::size_t p = 0; p < kParts; ++p) fn(p, n * p / kParts, n * (p + 1) / kParts);
    return;
  }
  std::exception_ptr errors[kParts];
  detail::parallel_for_dynamic(kParts, pass_threads(), 1, [&](std::size_t pb, std::size_t pe) {
    for (std::size_t p = pb; p < pe; ++p) {
      try {
        fn(p, n * p / kParts, n * (p + 1) / kParts);
      } catch (...) {
        errors[p] = std::current_exception();
      }
    }
  });
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

// ---------------------------------------------------------------- scratch memory
// Scratch arrays kept by the calling thread between calls, up to kScratchKeep bytes each: on
// this kind of machine (a VM) a fresh 8 MB array costs about 3 ms of page faults, more than
// the pass that fills it. Larger arrays are allocated for the call and freed after it.
constexpr std::size_t kScratchKeep = std::size_t{32} << 20;

template <class T, int Slot>
class Scratch {
 public:
  explicit Scratch(std::size_t n) {
    Cache& c = cache();
    if (n * sizeof(T) <= kScratchKeep) {
      if (c.size < n) {
        c.data.reset();
        c.data.reset(new T[n]);
        c.size = n;
      }
      ptr_ = c.data.get();
    } else {
      own_.reset(new T[n]);
      ptr_ = own_.get();
    }
  }
  T* get() const { return ptr_; }

 private:
  struct Cache {
    std::unique_ptr<T[]> data;
    std::size_t size = 0;
  };
  static Cache& cache() {
    thread_local Cache c;
    return c;
  }
  std::unique_ptr<T[]> own_;
  T* ptr_ = nullptr;
};

// ---------------------------------------------------------------- sampling and rounding helpers
// The selections below first guess, from a random sample, two pivots that should bracket the
// answer, then make one exact pass that settles every item outside the bracket; only the few
// items inside go on to the exact random-pivot selection. A bad guess costs another pass,
// never a different result: every decision about an item is an exact comparison (exact mode).

constexpr std::size_t kSample = 8192;  // largest sample of a bracketing round

// Sample size for n items: a sixteenth of them, between 1024 and kSample (sorting the sample
// should cost little next to the pass it saves).
inline std::size_t sample_size(std::size_t n) { return std::clamp<std::size_t>(n / 16, 1024, kSample); }
constexpr std::size_t kSmall = 4096;  // below this many items, select directly

// Half-width of the bracket around the sample's estimate, in sample ranks: a few standard
// deviations of the estimate's rank (about sqrt of the sample size).
inline std::size_t bracket_halfwidth(std::size_t sample) {
  return static_cast<std::size_t>(3.0 * std::sqrt(static_cast<double>(sample))) + 2;
}

// floor(p * x / d) for fixed p and 0 < d < 2^63 without a 128-by-64-bit division per x: with
// p = ph * d + pl and q = floor(pl * 2^64 / d), floor(q * x / 2^64) is floor(pl * x / d) or
// one less (q / 2^64 is below pl / d by less than 2^-64 and x < 2^64); one comparison of the
// exact remainder corrects it. The same quotient and remainder as a hardware division.
class MulDiv {
 public:
  MulDiv(u64 p, u64 d) : d_(d), ph_(p / d), pl_(p % d) {
    u64 r;
    q_ = div128(static_cast<u128>(pl_) << 64, d, r);
  }
  // floor(p * x / d) modulo 2^64 (used only where it fits), and rem = p * x mod d.
  u64 div(u64 x, u64& rem) const {
    u64 f = static_cast<u64>((static_cast<u128>(q_) * x) >> 64);
    // pl * x - f * d lies in [0, 2d), below 2^64: the wrapping 64-bit products give it exactly
    u64 r = pl_ * x - f * d_;
    const bool up = r >= d_;
    f += up ? 1 : 0;
    r -= up ? d_ : 0;
    rem = r;
    return ph_ * x + f;
  }

 private:
  u64 d_, ph_, pl_, q_ = 0;
};

struct RemHistogram {
  static constexpr int kBits = 11;
  static constexpr std::size_t kBuckets = std::size_t{1} << kBits;
  // per slice, four interleaved copies (by index mod 4): clustered remainders would otherwise
  // chain every increment on the previous one to the same counter
  static constexpr std::size_t kCopies = 4;
  int shift;
  std::vector<u32> part;   // [slice][copy][bucket]
  std::vector<u32> count;  // all of them summed, after merge()
  explicit RemHistogram(u64 V)
      : shift(std::max(0, static_cast<int>(std::bit_width(V - 1)) - kBits)), part(kParts * kCopies * kBuckets, 0) {}
  u32* slice(std::size_t p) { return part.data() + p * kCopies * kBuckets; }
  static void add(u32* slice, std::size_t i, u64 r, int shift) {
    ++slice[(i & (kCopies - 1)) * kBuckets + (r >> shift)];
  }
  u32 slice_count(std::size_t p, std::size_t b) const {
    u32 c = 0;
    for (std::size_t k = 0; k < kCopies; ++k) c += part[(p * kCopies + k) * kBuckets + b];
    return c;
  }
  void merge() {
    count.assign(kBuckets, 0);
    for (std::size_t c = 0; c < kParts * kCopies; ++c)
      for (std::size_t b = 0; b < kBuckets; ++b) count[b] += part[c * kBuckets + b];
  }
};

// One unit each to the `need` winners idx[0, m) (in index order) with the largest remainders
// rem_of(i), ties to the smaller index: radix selection on the spread of the values, a level
// per round, until the winners left all have the same remainder and the first ones by index
// take the rest. Remainders often cluster (B = W / 3 makes thirds), so one level is not
// enough. Remainders are recomputed, not stored (see add_largest_remainders); rem_of(i) may
// read x[i], which changes only for winners that leave the set.
template <class RemOf>
void add_top_remainders(i64* x, u32* idx, std::size_t m, u64 need, const RemOf& rem_of) {
  std::vector<u32> count;
  while (need > 0) {
    if (need >= m) {
      for (std::size_t j = 0; j < m; ++j) ++x[idx[j]];
      return;
    }
    u64 lo = rem_of(idx[0]), hi = lo;
    for (std::size_t j = 0; j < m; ++j) {
      const u64 r = rem_of(idx[j]);
      lo = std::min(lo, r), hi = std::max(hi, r);
    }
    if (lo == hi) {
      for (u64 j = 0; j < need; ++j) ++x[idx[j]];
      return;
    }
    const int shift = std::max(0, static_cast<int>(std::bit_width(hi - lo)) - RemHistogram::kBits);
    count.assign(RemHistogram::kBuckets, 0);
    for (std::size_t j = 0; j < m; ++j) ++count[(rem_of(idx[j]) - lo) >> shift];
    u64 above = 0;
    std::size_t b = count.size();
    while (b > 0) {
      --b;
      if (above + count[b] >= need) break;
      above += count[b];
    }
    std::size_t keep = 0;
    for (std::size_t j = 0; j < m; ++j) {
      const u64 k = (rem_of(idx[j]) - lo) >> shift;
      if (k > b)
        ++x[idx[j]];
      else if (k == b)
        idx[keep++] = idx[j];
    }
    m = keep;
    need -= above;
  }
}

// Largest remainder: one unit each to the `extra` winners with the largest remainders rem_i
// (ties: the smaller index). Remainders are < V; only positive ones compete (there are always
// more of them than `extra`). Radix selection over two passes that recompute the remainders
// rather than store them (on this kind of machine a fresh 8 MB array costs more in page
// faults than recomputing): the caller's rounding pass fills a histogram of their top bits,
// which gives the bucket holding the threshold; the second pass gives a unit to every winner
// above that bucket and collects the ones in it, which add_top_remainders then orders.
template <class RemOf>
[[gnu::noinline]] void add_largest_remainders(i64* x, std::size_t n, RemHistogram& hist, u64 extra, RemOf rem_of) {
  if (extra == 0) return;
  hist.merge();
  u64 above = 0;
  std::size_t b = hist.count.size();
  while (b > 0) {
    --b;
    if (above + hist.count[b] >= extra) break;
    above += hist.count[b];
  }
  const u64 bucket = b;
  const int shift = hist.shift;
  // each slice writes the indices of its winners in that bucket into its own run of the
  // array, without a branch (one spare slot per slice takes the misses)
  std::size_t start[kParts + 1] = {};
  for (std::size_t p = 0; p < kParts; ++p) start[p + 1] = start[p] + hist.slice_count(p, b) + 1;
  const Scratch<u32, 0> idx(start[kParts]);
  std::size_t got[kParts] = {};
  for_slices(n, [&, x, bucket, shift](std::size_t p, std::size_t lo, std::size_t hi) {
    u32* const tp = idx.get() + start[p];
    const RemOf rem = rem_of;
    std::size_t nt = 0;
    for (std::size_t i = lo; i < hi; ++i) {
      const u64 r = rem(i);
      const u64 k = r >> shift;
      x[i] += k > bucket ? 1 : 0;
      tp[nt] = static_cast<u32>(i);
      nt += ((k == bucket) & (r != 0)) ? 1 : 0;  // zero remainders never compete
    }
    got[p] = nt;
  });
  std::size_t m = got[0];
  for (std::size_t p = 1; p < kParts; ++p) {
    std::copy(idx.get() + start[p], idx.get() + start[p] + got[p], idx.get() + m);
    m += got[p];
  }
  add_top_remainders(x, idx.get(), m, extra - above, rem_of);
}

// ---------------------------------------------------------------- queue and random walk

template <class T>
std::vector<T> queue_alloc(const AllocRequest<T>& req, T budget) {
  const auto w = req.capacity;
  const auto score = req.score;
  const std::size_t n = w.size();
  std::vector<T> x(n, T{0});
  if (budget == 0) return x;
  struct Item {
    double s;
    T w;
    u32 i;
  };
  auto before = [](const Item& a, const Item& b) { return a.s != b.s ? a.s > b.s : a.i < b.i; };
  // exact: the greedy prefix of `items` (whose amounts are all 0 so far) that raises target
  auto finish = [&](std::vector<Item>& items, T target) {
    T acc{};
    const std::size_t p = weighted_select(items, before, [](const Item& a) { return a.w; }, target, acc);
    for (std::size_t j = 0; j < p; ++j) x[items[j].i] = items[j].w;
    x[items[p].i] = std::min(items[p].w, static_cast<T>(target - acc));
  };
  auto everyone = [&] {
    std::fill(x.begin(), x.end(), T{0});
    std::vector<Item> items;
    for (std::size_t i = 0; i < n; ++i)
      if (w[i] > 0) items.push_back({score[i], w[i], static_cast<u32>(i)});
    finish(items, budget);
    return x;
  };
  if (n <= kSmall) return everyone();
  // guess the cut from a sample: the first sampled winner at which the scaled running
  // capacity reaches the budget, and pivots a few standard deviations either side of it
  Rng rng;
  std::vector<Item> smp;
  smp.reserve(kSample);
  for (std::size_t k = 0; k < kSample; ++k) {
    const std::size_t i = rng.below(n);
    if (w[i] > 0) smp.push_back({score[i], w[i], static_cast<u32>(i)});
  }
  if (smp.size() < 64) return everyone();
  std::sort(smp.begin(), smp.end(), before);
  const double scale = static_cast<double>(n) / static_cast<double>(kSample);
  std::size_t est = smp.size();
  double run = 0.0;
  for (std::size_t j = 0; j < smp.size(); ++j) {
    run += scale * static_cast<double>(smp[j].w);
    if (run >= static_cast<double>(budget)) {
      est = j;
      break;
    }
  }
  const std::size_t h = bracket_halfwidth(smp.size());
  const bool has_first = est >= h, has_last = est + h < smp.size();
  const Item p1 = has_first ? smp[est - h] : Item{}, p2 = has_last ? smp[est + h] : Item{};
  // one exact pass: winners before p1 are taken in full, winners after p2 not at all
  const std::size_t expect = static_cast<std::size_t>(static_cast<double>(n) * (2.0 * static_cast<double>(h) + 1) /
                                                      static_cast<double>(smp.size()) * 1.25 / kParts) +
                             64;
  T taken_p[kParts] = {}, between_p[kParts] = {};
  std::vector<Item> mids[kParts];
  T* const xp = x.data();
  // the ranking as one unsigned 128-bit key: the score's bits flipped so that unsigned order
  // is numeric order (-0 made +0 first: they tie), then the index complemented (the smaller
  // index ranks first); "ranks before" is then a single unsigned comparison
  auto key = [](double sc, std::size_t i) {
    const u64 b = std::bit_cast<u64>(sc + 0.0);
    const u64 k = (b >> 63) ? ~b : (b | (u64{1} << 63));
    return (static_cast<u128>(k) << 64) | static_cast<u64>(~static_cast<u64>(i));
  };
  const u128 k1 = has_first ? key(p1.s, p1.i) : ~u128{0}, k2 = has_last ? key(p2.s, p2.i) : u128{0};
  for_slices(n, [&, xp](std::size_t p, std::size_t b, std::size_t e) {
    std::vector<Item>& mid = mids[p];
    mid.reserve(expect);
    T taken{}, between{};
    for (std::size_t i = b; i < e; ++i) {
      const double si = score[i];
      const T wi = w[i];
      const u128 ki = key(si, i);
      const bool first = ki > k1, last = ki < k2;
      const T take = wi * static_cast<T>(first);  // no branch: which side a winner falls on is random
      xp[i] = take;
      taken += take;
      if (!(first | last) & (wi > 0)) [[unlikely]] {
        mid.push_back({si, wi, static_cast<u32>(i)});
        between += wi;
      }
    }
    taken_p[p] = taken, between_p[p] = between;
  });
  T taken{}, between{};
  for (std::size_t p = 0; p < kParts; ++p) taken += taken_p[p], between += between_p[p];
  std::vector<Item> mid = std::move(mids[0]);
  for (std::size_t p = 1; p < kParts; ++p) mid.insert(mid.end(), mids[p].begin(), mids[p].end());
  // the winner at which the running capacity reaches the budget lies between the pivots
  if (taken < budget && (!has_last || taken + between >= budget)) {
    finish(mid, static_cast<T>(budget - taken));
    return x;
  }
  return everyone();  // the sample misled us (rare): select among everyone
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
// largest remainder; float: doubles. Items come from an accessor get(i) -> {K_i, v_i} so that
// K and v need not be stored when they are cheap to recompute.

template <class V>
struct WfItem {
  V k;
  V v;
};

// The exact random-pivot water level over a candidate set `a` (live items only), given the
// items settled outside it: A = sum K of those saturated, Vs = sum v of those unsaturated.
// Returns (q, Vsum): tau = q / Vsum (Vsum == 0: everything saturated).
template <class V>
std::pair<V, V> water_level_small(std::vector<WfItem<V>>& a, V budget, V A, V Vs) {
  Rng rng;
  std::size_t lo = 0, hi = a.size();
  auto first = [&](std::size_t j) { return a.begin() + static_cast<std::ptrdiff_t>(j); };
  while (lo < hi) {
    const WfItem<V> p = a[lo + rng.below(hi - lo)];
    // t_j = k_j / v_j compared with t_p: k_j * v_p vs k_p * v_j
    auto m1 =
        std::partition(first(lo), first(hi), [&](const WfItem<V>& it) { return mulw(it.k, p.v) < mulw(p.k, it.v); });
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

// The fallback of a bracketing round, robust to any weights: 63 pivots at count quantiles of
// a sample of the live items with in_side(K, v), one exact pass that puts each such item in
// its bucket between pivots (branch-free binary search) and sums K and v per bucket, which
// gives F exactly at every pivot, hence the bucket holding tau; a second pass collects that
// bucket (about 1/64 of the side whatever the weights). A side too rare to sample is collected
// whole (it is small then).
template <class V, class Get, class InSide>
[[gnu::noinline]] std::vector<WfItem<V>> water_buckets(std::size_t n, Get get, InSide in_side, V budget, V& A, V& Vs,
                                                       Rng& rng) {
  constexpr std::size_t kPivots = 63, kBuckets = kPivots + 1;
  auto member = [&](const WfItem<V>& it) { return it.k > 0 && it.v > 0 && in_side(it.k, it.v); };
  struct Smp {
    double t;
    WfItem<V> it;
  };
  std::vector<Smp> smp;
  for (std::size_t k = 0; k < 4 * kSample && smp.size() < kSample / 4; ++k)
    if (const WfItem<V> it = get(rng.below(n)); member(it))
      smp.push_back({static_cast<double>(it.k) / static_cast<double>(it.v), it});
  std::vector<WfItem<V>> out;
  if (smp.size() < 4 * kPivots) {
    for (std::size_t i = 0; i < n; ++i)
      if (const WfItem<V> it = get(i); member(it)) out.push_back(it);
    return out;
  }
  std::sort(smp.begin(), smp.end(), [](const Smp& a, const Smp& b) { return a.t < b.t; });
  WfItem<V> piv[kBuckets];
  for (std::size_t j = 0; j < kPivots; ++j) piv[j] = smp[(j + 1) * smp.size() / kBuckets].it;
  piv[kPivots] = WfItem<V>{1, 0};  // an infinite level: no item lies beyond it
  const Scratch<std::uint8_t, 0> ids(n);
  std::uint8_t* const id = ids.get();
  V sk[kParts][kBuckets] = {}, sv[kParts][kBuckets] = {};
  for_slices(n, [&, id](std::size_t part, std::size_t b, std::size_t e) {
    V* const k_sum = sk[part];
    V* const v_sum = sv[part];
    for (std::size_t i = b; i < e; ++i) {
      const WfItem<V> it = get(i);
      if (!member(it)) {
        id[i] = 0xFF;
        continue;
      }
      std::size_t pos = 0;  // the number of pivots whose level is below t_i
      for (std::size_t step = kBuckets / 2; step > 0; step /= 2) {
        const WfItem<V>& q = piv[pos + step - 1];
        pos += less(mulw(q.k, it.v), mulw(it.k, q.v)) ? step : 0;
      }
      id[i] = static_cast<std::uint8_t>(pos);
      k_sum[pos] += it.k;
      v_sum[pos] += it.v;
    }
  });
  V SK[kBuckets] = {}, SV[kBuckets] = {};
  for (std::size_t part = 0; part < kParts; ++part)
    for (std::size_t j = 0; j < kBuckets; ++j) SK[j] += sk[part][j], SV[j] += sv[part][j];
  // F at pivot j: every item of buckets 0..j is saturated there, the rest pull p_j * v
  V below = 0, above = 0;
  for (std::size_t j = 0; j < kBuckets; ++j) above += SV[j];
  std::size_t hit = kPivots;
  for (std::size_t j = 0; j < kPivots; ++j) {
    below += SK[j];
    above -= SV[j];
    const WfItem<V>& q = piv[j];
    if (mulw(static_cast<V>(A + below), q.v) + mulw(q.k, static_cast<V>(Vs + above)) >= mulw(budget, q.v)) {
      hit = j;
      break;
    }
  }
  for (std::size_t j = 0; j < hit; ++j) A += SK[j];
  for (std::size_t j = hit + 1; j < kBuckets; ++j) Vs += SV[j];
  // tau <= the level of pivot `hit`: the bucket's items level with it are unsaturated
  const WfItem<V> top = piv[hit];
  for (std::size_t i = 0; i < n; ++i)
    if (id[i] == hit) {
      const WfItem<V> it = get(i);
      if (hit < kPivots && !less(mulw(it.k, top.v), mulw(top.k, it.v))) {
        Vs += it.v;
      } else {
        out.push_back(it);
      }
    }
  return out;
}

// An item of a bracketing round between its pivots (t_lo <= t <= t_hi): collected, or, level
// with a pivot, only summed into tied[0] (K, level with t_lo) or tied[1] (v, level with t_hi).
// Out of line so that the round's hot loop keeps its registers.
template <class V>
[[gnu::noinline]] void mid_or_tied(std::vector<WfItem<V>>& mid, V* tied, WfItem<V> l, WfItem<V> u, V k, V v) {
  if (!less(mulw(l.k, v), mulw(k, l.v))) {
    tied[0] += k;
  } else if (!less(mulw(k, u.v), mulw(u.k, v))) {
    tied[1] += v;
  } else {
    mid.push_back(WfItem<V>{k, v});
  }
}

// One bracketing round over items get(0..n): settles the items whose saturation level
// t_i = K_i / v_i is surely below tau (into A) or surely above it (into Vs) and returns the
// rest. F(t) = sum min(K_i, t v_i) is continuous and increasing, so tau lies in [t_lo, t_hi]
// iff F(t_lo) <= budget <= F(t_hi), both known exactly from the pass's sums.
template <class V, class Get>
[[gnu::noinline]] std::vector<WfItem<V>> water_bracket(std::size_t n, Get get, V budget, V& A, V& Vs, Rng& rng,
                                                       V& reach) {
  std::vector<WfItem<V>> out;
  auto live = [](const WfItem<V>& it) { return it.k > 0 && it.v > 0; };
  auto everyone = [&] {
    out.clear();
    reach = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (const WfItem<V> it = get(i); live(it)) out.push_back(it), reach += it.k;
    return std::move(out);
  };
  if (n <= kSmall) return everyone();
  struct Smp {
    double t;
    WfItem<V> it;
  };
  std::vector<Smp> smp;
  const std::size_t draws = sample_size(n);
  smp.reserve(draws);
  for (std::size_t k = 0; k < draws; ++k)
    if (const WfItem<V> it = get(rng.below(n)); live(it))
      smp.push_back({static_cast<double>(it.k) / static_cast<double>(it.v), it});
  if (smp.size() < 64) return everyone();
  std::sort(smp.begin(), smp.end(), [](const Smp& a, const Smp& b) { return a.t < b.t; });
  // estimate F at each sampled level (the sample stands for n / draws items each) and
  // take the first one at which it reaches the budget
  const double scale = static_cast<double>(n) / static_cast<double>(draws);
  double sk = 0.0, sv = 0.0;
  for (const Smp& s : smp) sv += static_cast<double>(s.it.v);
  std::size_t est = smp.size();
  for (std::size_t j = 0; j < smp.size(); ++j) {
    sk += static_cast<double>(smp[j].it.k);
    sv -= static_cast<double>(smp[j].it.v);
    const double F = static_cast<double>(A) + scale * sk + smp[j].t * (static_cast<double>(Vs) + scale * sv);
    if (F >= static_cast<double>(budget)) {
      est = j;
      break;
    }
  }
  const std::size_t h = bracket_halfwidth(smp.size());
  const bool has_lo = est >= h, has_hi = est + h < smp.size();
  const WfItem<V> plo = has_lo ? smp[est - h].it : WfItem<V>{}, phi = has_hi ? smp[est + h].it : WfItem<V>{};
  // one exact pass, per slice: sums of the settled groups, the items in between
  const std::size_t expect = static_cast<std::size_t>(static_cast<double>(n) * (2.0 * static_cast<double>(h) + 1) /
                                                      static_cast<double>(smp.size()) * 1.25 / kParts) +
                             64;
  V sums[kParts][7] = {};
  std::vector<WfItem<V>> mids[kParts];
  for_slices(n, [&](std::size_t p, std::size_t b, std::size_t e) {
    const Get g = get;
    // a missing pivot is one nothing falls beyond: level 0 below, an infinite level above
    const WfItem<V> l = has_lo ? plo : WfItem<V>{0, 1}, u = has_hi ? phi : WfItem<V>{1, 0};
    std::vector<WfItem<V>>& mid = mids[p];
    mid.reserve(expect);
    V skl = 0, svh = 0, skm = 0, svm = 0, skh = 0;
    V tied[2] = {};  // K level with t_lo, v level with t_hi (kept in memory: a rare path)
    for (std::size_t i = b; i < e; ++i) {
      const WfItem<V> it = g(i);
      const V k = it.k, v = it.v;
      if (!(k > 0 && v > 0)) continue;
      // no branches on the comparisons: which side an item falls on is random
      const bool below = less(mulw(k, l.v), mulw(l.k, v));
      const bool above = less(mulw(u.k, v), mulw(k, u.v));
      skl += below ? k : V{0};
      svh += above ? v : V{0};
      skh += above ? k : V{0};
      if (!below && !above) [[unlikely]] {
        skm += k;
        svm += v;
        // an item level with a pivot is settled, not collected, when tau lies in the
        // bracket: at t_lo it is saturated for any tau >= t_lo, at t_hi unsaturated for any
        // tau <= t_hi (many equal levels, e.g. one cap rate times float weights, would
        // otherwise all be collected)
        mid_or_tied(mid, tied, l, u, k, v);
      }
    }
    sums[p][0] = skl, sums[p][1] = svh, sums[p][2] = skm, sums[p][3] = svm, sums[p][4] = skh, sums[p][5] = tied[0],
    sums[p][6] = tied[1];
  });
  V skl = 0, svh = 0, skm = 0, svm = 0, skh = 0, ske = 0, sve = 0;
  for (std::size_t p = 0; p < kParts; ++p)
    skl += sums[p][0], svh += sums[p][1], skm += sums[p][2], svm += sums[p][3], skh += sums[p][4], ske += sums[p][5],
        sve += sums[p][6];
  reach = skl + skm + skh;
  out = std::move(mids[0]);
  for (std::size_t p = 1; p < kParts; ++p) out.insert(out.end(), mids[p].begin(), mids[p].end());
  const bool lo_ok = !has_lo || mulw(static_cast<V>(A + skl), plo.v) + mulw(plo.k, static_cast<V>(Vs + svm + svh)) <=
                                    mulw(budget, plo.v);
  const bool hi_ok = !has_hi || mulw(static_cast<V>(A + skl + skm), phi.v) + mulw(phi.k, static_cast<V>(Vs + svh)) >=
                                    mulw(budget, phi.v);
  if (lo_ok && hi_ok) {
    A += skl + ske;
    Vs += svh + sve;
    return out;
  }
  // the guess missed (heavy-tailed weights: the sample lacks the few items that dominate F):
  // settle the other two groups and narrow the side that holds tau without guessing
  if (!lo_ok) {
    Vs += svm + svh;
    const WfItem<V> p = plo;
    return water_buckets<V>(n, get, [p](V k, V v) { return less(mulw(k, p.v), mulw(p.k, v)); }, budget, A, Vs, rng);
  }
  A += skl + skm;
  const WfItem<V> p = phi;
  return water_buckets<V>(n, get, [p](V k, V v) { return less(mulw(p.k, v), mulw(k, p.v)); }, budget, A, Vs, rng);
}

// Returns (q, Vsum): tau = q / Vsum (Vsum == 0: everything saturated), and in `reach` the sum
// of K over the live items (what the policy can raise), found by the first pass on the way.
// With a budget above reach the level is meaningless; the caller then clips or refuses.
template <class V, class Get>
std::pair<V, V> water_level(std::size_t n, Get get, V budget, V& reach) {
  Rng rng;
  V A = 0, Vs = 0, unused = 0;
  std::vector<WfItem<V>> cand = water_bracket<V>(n, get, budget, A, Vs, rng, reach);
  if (budget > reach) return {0, 0};
  while (cand.size() > kSmall) {
    const std::size_t before = cand.size();
    std::vector<WfItem<V>> next =
        water_bracket<V>(cand.size(), [&](std::size_t j) { return cand[j]; }, budget, A, Vs, rng, unused);
    cand = std::move(next);
    if (cand.size() * 2 > before) break;  // many equal levels: the exact selection copes
  }
  return water_level_small(cand, budget, A, Vs);
}

// Exact x_i = min(K_i, floor(q v_i / V)) plus largest remainder (V == 0: x_i = K_i for
// v_i > 0), written into x, which get() may read K_i from (each x_i is read before it is
// written). Saturated (K_i V <= q v_i) is the same as K_i <= floor(q v_i / V) since K_i is an
// integer.
template <class Get>
[[gnu::noinline]] void water_round_exact(i64* x, std::size_t n, Get get, u64 budget, u64 q, u64 V) {
  if (budget == 0) {
    std::fill(x, x + n, 0);
    return;
  }
  if (V == 0) {
    for_slices(n, [&, x](std::size_t, std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) {
        const WfItem<u64> it = get(i);
        x[i] = it.v > 0 ? static_cast<i64>(it.k) : 0;
      }
    });
    return;
  }
  const MulDiv md(q, V);
  RemHistogram hist(V);
  u64 sums[kParts] = {};
  for_slices(n, [&, x](std::size_t p, std::size_t lo, std::size_t hi) {
    // locals, so that the stores to x cannot alias them
    const MulDiv m = md;
    const Get g = get;
    const u64 qq = q, VV = V;
    const int shift = hist.shift;
    u32* const part = hist.slice(p);
    u64 sum = 0;
    for (std::size_t i = lo; i < hi; ++i) {
      const WfItem<u64> it = g(i);
      const bool sat = mulw(it.k, VV) <= mulw(qq, it.v);
      u64 r;
      const u64 f = m.div(it.v, r);  // meaningful only if not saturated (then f < K_i)
      RemHistogram::add(part, i, sat ? 0 : r, shift);
      // a saturated winner is stored as ~K_i (negative) until the next pass: that pass knows
      // it from the sign without K_i, which may have been cached in x
      x[i] = sat ? ~static_cast<i64>(it.k) : static_cast<i64>(f);
      sum += sat ? it.k : f;
    }
    sums[p] = sum;
  });
  u64 sum = 0;
  for (u64 v : sums) sum += v;
  // the second pass rebuilds each remainder from the stored floor: q v_i - x_i V, exact in
  // wrapping 64-bit arithmetic because the true value is below V < 2^63; a saturated winner
  // gets K_i back and remainder 0
  auto rem_of = [get, q, V, x](std::size_t i) {
    const i64 xi = x[i];
    if (xi < 0) {
      x[i] = ~xi;
      return u64{0};
    }
    return q * get(i).v - static_cast<u64>(xi) * V;
  };
  if (budget == sum) {
    for_slices(n, [&](std::size_t, std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) (void)rem_of(i);
    });
    return;
  }
  add_largest_remainders(x, n, hist, budget - sum, rem_of);
}

// clip(reach) -> the budget to raise (clipped, or throws when the policy cannot raise it).
// x: the output, which get() may read K_i from.
template <class Get, class Clip>
std::vector<i64> water_fill_exact(std::vector<i64> x, Get get, u64 budget, Clip clip) {
  const std::size_t n = x.size();
  if (budget == 0) {
    std::fill(x.begin(), x.end(), 0);
    return x;
  }
  u64 reach = 0;
  const auto [q, V] = water_level<u64>(n, get, budget, reach);
  const u64 b = clip(reach);
  if (b != budget) {
    water_round_exact(x.data(), n, get, b, 0, 0);  // clipped to reach: all saturated
  } else {
    water_round_exact(x.data(), n, get, budget, q, V);
  }
  return x;
}

template <class Get, class Clip>
std::vector<double> water_fill_float(std::size_t n, Get get, double budget, Clip clip) {
  std::vector<double> x(n, 0.0);
  if (budget == 0) return x;
  double reach = 0.0;
  const std::pair<double, double> level = water_level<double>(n, get, budget, reach);
  double q = level.first, V = level.second;
  if (clip(reach) != budget) q = 0.0, V = 0.0;  // clipped to reach: all saturated
  const double tau = V > 0 ? q / V : 0.0;
  double* const xp = x.data();
  for_slices(n, [&, xp, tau, V](std::size_t, std::size_t b, std::size_t e) {
    const Get g = get;
    for (std::size_t i = b; i < e; ++i) {
      const WfItem<double> it = g(i);
      if (it.k <= 0 || it.v <= 0) continue;
      xp[i] = V > 0 ? std::min(it.k, tau * it.v) : it.k;
    }
  });
  return x;
}

// Integer caps K_i = floor(w_i * c_i / 1e8) without a 128-bit division.
u64 cap_amount(i64 w, i64 c) {
  const u64 a = static_cast<u64>(w) / kAllocRateScale, b = static_cast<u64>(w) % kAllocRateScale;
  return a * static_cast<u64>(c) + b * static_cast<u64>(c) / kAllocRateScale;
}

double risk_weight(double lam, const RiskFunction& g) {
  switch (g.kind) {
    case RiskFunction::Kind::Linear:
      return lam * lam;
    case RiskFunction::Kind::Power:
      return lam * std::pow(lam, g.param);
    case RiskFunction::Kind::Excess:
      return lam * std::max(lam - g.param, 0.0);
  }
  return 0.0;
}

// r_i = lambda_i * g(lambda_i) into out[i] for i in [begin, end) (its bits: out is reused
// for v_i), returns their max (validating leverage).
template <class T>
double risk_weights(const AllocRequest<T>& req, T* out, std::size_t begin, std::size_t end) {
  double rmax = 0.0;
  for (std::size_t i = begin; i < end; ++i) {
    double lam;
    if constexpr (std::is_same_v<T, double>) {
      lam = req.leverage[i];
      if (!std::isfinite(lam)) throw InvalidInput(at("leverage", i) + ": " + num_str(lam) + " is not a finite number");
    } else {
      lam = static_cast<double>(req.leverage[i]) / static_cast<double>(kAllocRateScale);
    }
    if (lam < 0) throw InvalidInput(at("leverage", i) + ": " + num_str(req.leverage[i]) + " must not be negative");
    const double r = risk_weight(lam, req.g);
    if (!std::isfinite(r))
      throw InvalidInput(at("leverage", i) + ": risk weight leverage*g(leverage) overflows float64");
    rmax = std::max(rmax, r);
    out[i] = std::bit_cast<T>(r);
  }
  return rmax;
}

// ---------------------------------------------------------------- min_max_lots
// The one-at-a-time greedy hands out the M smallest pairs (m / w_i, i), 1 <= m <= L_i, in
// that order (a winner's pairs increase with m). With N(c) = sum_i min(L_i, floor(c * w_i))
// the number of pairs at or below a level c: take every pair at or below a level lo with
// N(lo) < M, and the M - N(lo) smallest pairs in (lo, hi] for a level hi with N(hi) >= M.
// lo and hi are doubles, each taken as the exact dyadic rational it is (exact mode), found
// by Newton / secant steps on N with one counting pass per step, until few pairs lie between
// them; those few are ordered exactly (cross-multiplication, ties by index).

template <class T>
struct LotMath;
template <>
struct LotMath<i64> {
  struct Level {
    u64 mant;
    int sh;  // c = mant / 2^sh
  };
  static Level level(double c) {  // 0 <= c <= 2
    int ex = 0;
    const double f = std::frexp(c, &ex);
    return {static_cast<u64>(std::ldexp(f, 53)), 53 - ex};
  }
  // min(L, floor(c * w)); full = the winner has no pair above c
  static u64 count(const Level& c, i64 w, u64 L, bool& full) {
    const u128 f = c.sh >= 128 ? 0 : mulw(c.mant, static_cast<u64>(w)) >> c.sh;
    full = f >= L;
    return full ? L : static_cast<u64>(f);
  }
  static bool less(u64 ma, i64 wa, u64 mb, i64 wb) {
    return mulw(ma, static_cast<u64>(wb)) < mulw(mb, static_cast<u64>(wa));
  }
};
template <>
struct LotMath<double> {
  using Level = double;
  static Level level(double c) { return c; }
  // floor(y) >= L iff y >= L (L an integer); below L < 2^53, y >= 0 truncates to its floor
  // through int64 in one instruction (std::floor is a library call on baseline x86-64)
  static u64 count(double c, double w, u64 L, bool& full) {
    const double y = c * w;
    full = y >= static_cast<double>(static_cast<i64>(L));
    return full ? L : static_cast<u64>(static_cast<i64>(y));
  }
  static bool less(u64 ma, double wa, u64 mb, double wb) {
    return static_cast<double>(ma) * wb < static_cast<double>(mb) * wa;
  }
};

// The winners of the uniform-lot min-max: L_i = floor(w_i / lot) lots each (float mode: cached
// in x by the first pass, since a division costs more than reading it back; the passes read
// it before they write x_i), and N, the lots at or below a level.
template <class T>
struct UniformLots {
  using L = LotMath<T>;
  using Sum = std::conditional_t<std::is_same_v<T, double>, double, u64>;  // exact: sum w fits
  std::span<const T> w;
  T lot;
  std::size_t n;
  T* xp;
  ConstantDivider by_lot;

  u64 lots(std::size_t i) const {
    if constexpr (std::is_same_v<T, double>) {
      return static_cast<u64>(static_cast<i64>(xp[i]));  // < 2^53
    } else {
      return by_lot.div_u64(static_cast<u64>(w[i]));
    }
  }
  // N and the capacity of the winners not yet full (dN/dc, ignoring the floors) at two levels
  void count2(double c1, double c2, u64& n1, u64& n2, double& u1, double& u2) const {
    const auto l1 = L::level(c1), l2 = L::level(c2);
    u64 a[kParts][2] = {};
    Sum u[kParts][2] = {};
    for_slices(n, [&](std::size_t p, std::size_t b, std::size_t e) {
      u64 a1 = 0, a2 = 0;
      Sum s1 = 0, s2 = 0;
      for (std::size_t i = b; i < e; ++i) {
        const u64 li = lots(i);
        bool f1, f2;
        a1 += L::count(l1, w[i], li, f1);
        a2 += L::count(l2, w[i], li, f2);
        s1 += f1 ? Sum{0} : static_cast<Sum>(w[i]);
        s2 += f2 ? Sum{0} : static_cast<Sum>(w[i]);
      }
      a[p][0] = a1, a[p][1] = a2, u[p][0] = s1, u[p][1] = s2;
    });
    n1 = n2 = 0;
    Sum s1 = 0, s2 = 0;
    for (std::size_t p = 0; p < kParts; ++p) n1 += a[p][0], n2 += a[p][1], s1 += u[p][0], s2 += u[p][1];
    u1 = static_cast<double>(s1), u2 = static_cast<double>(s2);
  }
};

// N(0) = 0 < M <= total = N(2 / lot). Between lots, N(c) runs about half a lot per unfilled
// winner below the line c * (their capacity): Newton steps aim there, with pivots a few times
// the floors' noise (~sqrt(n) lots) either side. Returns levels lo < hi with N(lo) = nlo < M
// <= N(hi) and few lots between.
template <class T>
void min_max_bracket(const UniformLots<T>& U, u64 M, u64 total_lots, u64 nlive, double wlive, double& lo, double& hi,
                     u64& nlo) {
  const T lot = U.lot;
  lo = 0.0, hi = 2.0 / static_cast<double>(lot);
  double ulo = wlive;
  bool hi_pivot = false;
  nlo = 0;
  u64 nhi = total_lots;
  const double noise = 8.0 * std::sqrt(static_cast<double>(nlive)) + 64.0;
  const u64 window = static_cast<u64>(4.0 * noise) + 65536;
  double widen = 1.0;
  for (int iter = 0; iter < 4000 && nhi - nlo > window; ++iter) {
    const double next = std::nextafter(lo, hi);
    if (next >= hi) break;
    double est, slope;
    if (hi_pivot) {  // both ends measured: the secant
      slope = static_cast<double>(nhi - nlo) / (hi - lo);
      est = lo + static_cast<double>(M - nlo) / slope;
    } else {  // Newton from lo; from 0 the floors' half lot per winner is not yet in N(lo)
      slope = ulo > 0 ? ulo : wlive;
      est = lo + (static_cast<double>(M - nlo) + (iter == 0 ? 0.5 * static_cast<double>(nlive) : 0.0)) / slope;
    }
    const double d = widen * noise / slope;
    double p1 = est - d, p2 = est + d;
    if (!(p1 > lo && p1 < hi)) p1 = lo + (hi - lo) * 0.25;
    if (!(p2 > p1 && p2 < hi)) p2 = p1 + (hi - p1) * 0.5;
    p1 = std::max(p1, next);
    p2 = std::min(std::max(p2, p1), hi);
    u64 n1, n2;
    double u1, u2;
    U.count2(p1, p2, n1, n2, u1, u2);
    if (n1 < M) lo = p1, nlo = n1, ulo = u1;
    if (n2 < M) lo = p2, nlo = n2, ulo = u2;
    if (n2 >= M && p2 < hi) hi = p2, nhi = n2, hi_pivot = true;
    if (n1 >= M && p1 < hi) hi = p1, nhi = n1, hi_pivot = true;
    widen = (n1 < M && n2 >= M) ? 1.0 : widen * 2.0;
  }
}

// Every pair at or below lo, and the best `need` = M - N(lo) of the pairs in (lo, hi], into x.
template <class T>
void min_max_place(const UniformLots<T>& U, double lo, double hi, u64 need, std::vector<T>& x) {
  using L = LotMath<T>;
  const std::span<const T> w = U.w;
  const T lot = U.lot;
  const std::size_t n = U.n;
  T* const xp = x.data();
  auto lots = [&U](std::size_t i) { return U.lots(i); };
  struct Pair {
    u64 m;
    u32 i;
  };
  std::vector<Pair> slice_pairs[kParts];
  const auto llo = L::level(lo), lhi = L::level(hi);
  for_slices(n, [&, xp](std::size_t p, std::size_t b, std::size_t e) {
    std::vector<Pair>& pairs = slice_pairs[p];
    for (std::size_t i = b; i < e; ++i) {
      const u64 li = lots(i);
      bool full;
      const u64 a = L::count(llo, w[i], li, full);
      const u64 c = L::count(lhi, w[i], li, full);
      if constexpr (std::is_same_v<T, double>) {
        xp[i] = static_cast<double>(a);  // lots for now: lot * (a + extra) below, as one product
      } else {
        xp[i] = static_cast<i64>(static_cast<u64>(lot) * a);
      }
      for (u64 m = a + 1; m <= c; ++m) pairs.push_back({m, static_cast<u32>(i)});
    }
  });
  std::vector<Pair> pairs = std::move(slice_pairs[0]);
  for (std::size_t p = 1; p < kParts; ++p) pairs.insert(pairs.end(), slice_pairs[p].begin(), slice_pairs[p].end());
  auto before = [&](const Pair& p, const Pair& q) {
    if (L::less(p.m, w[p.i], q.m, w[q.i])) return true;
    if (L::less(q.m, w[q.i], p.m, w[p.i])) return false;
    return p.i < q.i;
  };
  if (need < pairs.size())
    std::nth_element(pairs.begin(), pairs.begin() + static_cast<std::ptrdiff_t>(need - 1), pairs.end(), before);
  if constexpr (std::is_same_v<T, double>) {
    for (u64 j = 0; j < need; ++j) x[pairs[j].i] += 1.0;
    for_slices(n, [&, xp](std::size_t, std::size_t b, std::size_t e) {
      for (std::size_t i = b; i < e; ++i) xp[i] *= lot;
    });
  } else {
    for (u64 j = 0; j < need; ++j) x[pairs[j].i] += lot;
  }
}

template <class T>
std::vector<T> min_max_lots_alloc(const AllocRequest<T>& req, T budget) {
  const auto w = req.capacity;
  const T lot = *req.lot;
  const std::size_t n = w.size();
  ConstantDivider by_lot;
  if constexpr (std::is_same_v<T, i64>) by_lot = ConstantDivider(lot);
  std::vector<T> x(n, T{0});
  T* const xp = x.data();
  const UniformLots<T> U{w, lot, n, xp, by_lot};
  auto lots = [&U](std::size_t i) { return U.lots(i); };
  using Sum = typename UniformLots<T>::Sum;
  u64 lots_p[kParts] = {}, live_p[kParts] = {};
  Sum wlive_p[kParts] = {};
  for_slices(n, [&](std::size_t p, std::size_t b, std::size_t e) {
    u64 tl = 0, nl = 0;
    Sum wl = 0;
    for (std::size_t i = b; i < e; ++i) {
      u64 l;
      if constexpr (std::is_same_v<T, double>) {
        const double q = w[i] / lot;  // >= 0: truncation is the floor
        if (q >= 9007199254740992.0) throw InvalidInput(at("capacity", i) + ": more than 2^53 lots of size lot");
        l = static_cast<u64>(static_cast<i64>(q));
        xp[i] = static_cast<double>(l);
      } else {
        l = lots(i);
      }
      tl += l;
      nl += l > 0 ? 1 : 0;
      wl += l > 0 ? static_cast<Sum>(w[i]) : Sum{0};
    }
    lots_p[p] = tl, live_p[p] = nl, wlive_p[p] = wl;
  });
  u64 total_lots = 0, nlive = 0;
  double wlive = 0.0;  // capacity of the winners with a lot (the slope of N near 0)
  for (std::size_t p = 0; p < kParts; ++p)
    total_lots += lots_p[p], nlive += live_p[p], wlive += static_cast<double>(wlive_p[p]);
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
  if (M == 0) {
    std::fill(x.begin(), x.end(), T{0});
    return x;
  }
  if (M == total_lots) {
    for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<T>(lot * static_cast<T>(lots(i)));
    return x;
  }
  double lo, hi;
  u64 nlo;
  min_max_bracket(U, M, total_lots, nlive, wlive, lo, hi, nlo);
  min_max_place(U, lo, hi, M - nlo, x);
  return x;
}

// ---------------------------------------------------------------- min_max_lots, general
// The same greedy with a lot size per winner (lots) or a base other than capacity: winner i
// holds L_i = floor(w_i / lot_i) lots (none when b_i == 0) and its m-th lot, of amount lot_i,
// sits at level m * lot_i / b_i; lots go out in (level, index) order until their amounts
// reach the budget. With A(c) the amount of the lots at or below level c, secant steps (two
// exact counts per pass) find levels lo < hi with A(lo) < B <= A(hi) and few lots between;
// every lot at or below lo is taken and those in (lo, hi] are ordered exactly.

template <class T>
struct GenLot;
template <>
struct GenLot<i64> {
  using Level = LotMath<i64>::Level;
  static Level level(double c) {
    if (c <= 0) return {0, 0};
    int ex = 0;
    const double f = std::frexp(c, &ex);
    return {static_cast<u64>(std::ldexp(f, 53)), 53 - ex};
  }
  // floor(p / d) for p < 2^63, d > 0: a float estimate corrected by exact products
  static u64 div(u64 p, u64 d) {
    u64 k = static_cast<u64>(static_cast<double>(p) / static_cast<double>(d));
    while (k > 0 && mulw(k, d) > p) --k;
    while (mulw(k + 1, d) <= p) ++k;
    return k;
  }
  static u64 lots(i64 w, i64 lot, i64 b) {
    if (b <= 0) return 0;
    const double q = static_cast<double>(w) / static_cast<double>(lot), f = static_cast<double>(static_cast<i64>(q));
    const double tol = (q + 1.0) * 0x1p-44;
    if (q - f > tol && f + 1.0 - q > tol) return static_cast<u64>(static_cast<i64>(q));  // q within 2^-52 of w / lot
    return div(static_cast<u64>(w), static_cast<u64>(lot));
  }
  // min(L, floor(c * b / lot)); full = the winner has no lot above c. est: c * b / lot in
  // float64 (within a few units of the truth), corrected by exact products
  static u64 count(const Level& c, double est, i64 b, i64 lot, u64 L, bool& full) {
    // est is within 2^-51 (relative) of the true c * b / lot: away from an integer and from
    // L its floor is the answer; otherwise (rare) exact products decide
    const double tol = (est + 1.0) * 0x1p-44, Ld = static_cast<double>(L);
    if (est - tol >= Ld) {
      full = true;
      return L;
    }
    if (est + tol < Ld) {
      const double f = static_cast<double>(static_cast<i64>(est));  // est < L < 2^63
      if (est - f > tol && f + 1.0 - est > tol) {
        full = false;
        return static_cast<u64>(static_cast<i64>(est));
      }
    }
    return exact_count(c, est, b, lot, L, full);
  }
  [[gnu::noinline]] static u64 exact_count(const Level& c, double est, i64 b, i64 lot, u64 L, bool& full) {
    u128 p = mulw(c.mant, static_cast<u64>(b));
    if (c.sh >= 128)
      p = 0;
    else if (c.sh >= 0)
      p >>= c.sh;
    else
      p = (-c.sh > 11 || p == 0) ? (p == 0 ? 0 : ~u128{0}) : p << -c.sh;  // product < 2^116
    full = p >= mulw(L, static_cast<u64>(lot));
    if (full) return L;
    const u64 pp = static_cast<u64>(p), d = static_cast<u64>(lot);  // p < L * lot <= w < 2^63
    u64 k = est < static_cast<double>(L) ? static_cast<u64>(static_cast<i64>(std::max(est, 0.0))) : L;
    while (k > 0 && mulw(k, d) > pp) --k;
    while (mulw(k + 1, d) <= pp) ++k;
    return k;
  }
  // (ma * lot_a) / b_a < (mb * lot_b) / b_b; both amounts are at most a capacity (< 2^63)
  static bool less(u64 ma, i64 la, i64 ba, u64 mb, i64 lb, i64 bb) {
    return mulw(ma * static_cast<u64>(la), static_cast<u64>(bb)) <
           mulw(mb * static_cast<u64>(lb), static_cast<u64>(ba));
  }
};
template <>
struct GenLot<double> {
  using Level = double;
  static Level level(double c) { return c; }
  static u64 lots(double w, double lot, double b) {
    if (!(b > 0)) return 0;
    const double q = w / lot;
    if (q >= 9007199254740992.0) throw InvalidInput("capacity: more than 2^53 lots of the winner's lot size");
    return static_cast<u64>(static_cast<i64>(q));
  }
  static u64 count(double, double est, double, double, u64 L, bool& full) {
    const double y = est;
    full = y >= static_cast<double>(static_cast<i64>(L));
    return full ? L : static_cast<u64>(static_cast<i64>(y));
  }
  static bool less(u64 ma, double la, double ba, u64 mb, double lb, double bb) {
    return static_cast<double>(ma) * la * bb < static_cast<double>(mb) * lb * ba;
  }
};

// Where the general min_max_lots search starts: the winners' full levels (L_i * lot_i / b_i,
// where a winner has given all its lots) counted in buckets of 1/16 octave, with the amount,
// base and lot size in each. Below its full level a winner gives about c * b_i - lot_i / 2 at
// level c, above it its whole amount, so one scan of the buckets estimates the level where
// the amounts reach the budget within a fraction of a bucket: the first counting pass can
// then bracket it, instead of a Newton step from level 0 that ignores every full winner.
// An estimate only: the search counts exactly wherever it probes.
class FullLevelHistogram {
 public:
  FullLevelHistogram() : amount_(kBuckets, 0.0), base_(kBuckets, 0.0), lots_(kBuckets, 0.0) {}
  void add(double level, double amount, double base, double lot) {
    const std::size_t j = bucket(level);
    amount_[j] += amount, base_[j] += base, lots_[j] += lot;
  }
  void merge(const FullLevelHistogram& o) {
    for (std::size_t j = 0; j < kBuckets; ++j)
      amount_[j] += o.amount_[j], base_[j] += o.base_[j], lots_[j] += o.lots_[j];
  }
  // The estimated level where the amounts reach `budget` (0 if the model never does), and
  // whether no full level lies near it (the amounts are a line there: only the floors blur it).
  struct Estimate {
    double level = 0;
    bool on_a_line = false;
  };
  Estimate estimate(double budget) const {
    double filled = 0, open_base = 0, open_lots = 0;
    for (std::size_t j = 0; j < kBuckets; ++j) open_base += base_[j], open_lots += lots_[j];
    for (std::size_t j = 0; j < kBuckets; ++j) {
      if (base_[j] == 0) continue;
      const double lo = edge(j), hi = edge(j + 1);
      const double at_lo = filled + lo * open_base - 0.5 * open_lots;
      // below this bucket nobody else fills: A is a line there
      if (at_lo >= budget) return {(budget - filled + 0.5 * open_lots) / open_base, true};
      const double at_hi = filled + amount_[j] + hi * (open_base - base_[j]) - 0.5 * (open_lots - lots_[j]);
      if (at_hi >= budget)
        return {at_hi > at_lo ? lo + (hi - lo) * std::clamp((budget - at_lo) / (at_hi - at_lo), 0.0, 1.0) : lo, false};
      filled += amount_[j], open_base -= base_[j], open_lots -= lots_[j];
    }
    return {};
  }

 private:
  static constexpr int kSub = 16, kMinExp = -64, kMaxExp = 64;  // levels outside go to the end buckets
  static constexpr std::size_t kBuckets = static_cast<std::size_t>(kMaxExp - kMinExp + 1) * kSub;
  static std::size_t bucket(double level) {  // level > 0: its exponent and top 4 mantissa bits
    const u64 bits = std::bit_cast<u64>(level);
    const int e = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
    if (e < kMinExp) return 0;
    if (e > kMaxExp) return kBuckets - 1;
    return static_cast<std::size_t>(e - kMinExp) * kSub + static_cast<std::size_t>((bits >> 48) & (kSub - 1));
  }
  static double edge(std::size_t j) {  // the lowest level of bucket j
    return std::ldexp(1.0 + static_cast<double>(j % kSub) / kSub, static_cast<int>(j / kSub) + kMinExp);
  }
  std::vector<double> amount_, base_, lots_;
};

// The general min_max_lots inputs per winner: its lot size (one for all, or its own) and the
// base its fraction taken is measured against (capacity unless given).
template <class T>
struct LotsAndBase {
  explicit LotsAndBase(const AllocRequest<T>& req)
      : lp(req.lots.empty() ? nullptr : req.lots.data()),
        bp(req.base.empty() ? req.capacity.data() : req.base.data()),
        one_lot(req.lot.value_or(T{1})) {}
  T lot(std::size_t i) const { return lp ? lp[i] : one_lot; }
  const T* lp;
  const T* bp;
  T one_lot;
};

// A lot between the levels: winner i's m-th.
struct LotBetween {
  u64 m;
  u32 i;
};

// The lots in (lo, hi] in (level, index) order until their amounts reach what the budget
// leaves after every lot at or below lo (taken_lo, below the budget), added to x (which holds
// the amounts at or below lo).
template <class T>
std::vector<T> min_max_lots_select(const AllocRequest<T>& req, T budget, std::vector<T> x,
                                   std::vector<LotBetween>& pairs, T taken_lo) {
  using G = GenLot<T>;
  const LotsAndBase<T> in(req);
  const T* const bp = in.bp;
  auto lot = [&in](std::size_t i) { return in.lot(i); };
  auto before = [&](const LotBetween& p, const LotBetween& q) {
    if (G::less(p.m, lot(p.i), bp[p.i], q.m, lot(q.i), bp[q.i])) return true;
    if (G::less(q.m, lot(q.i), bp[q.i], p.m, lot(p.i), bp[p.i])) return false;
    return p.i < q.i;
  };
  if (pairs.empty())
    throw InvalidInput("min_max_lots: internal error, no lot between the levels");  // A(hi) >= B > A(lo)
  T acc{};
  const std::size_t last = weighted_select(
      pairs, before, [&](const LotBetween& q) { return lot(q.i); }, static_cast<T>(budget - taken_lo), acc);
  for (std::size_t j = 0; j <= last; ++j) x[pairs[j].i] += lot(pairs[j].i);
  return x;
}

// What the general min_max_lots search learns from its first pass over the winners: the
// amount they can give (reach), the live winners and their lots, base and lot sizes, the
// highest full level, and the full levels' histogram.
template <class Sum>
struct LotsFirstPass {
  Sum reach = 0;
  double slope0 = 0, lot_live = 0, top = 0;  // sum of live bases and lot sizes; highest full level
  u64 nlive = 0, total_pairs = 0;
  FullLevelHistogram full_levels;
};

// The first pass: L_i (lots winner i can give) into xp and r_i = b_i / lot_i into r.
template <class T, class Sum>
LotsFirstPass<Sum> lots_first_pass(const AllocRequest<T>& req, T* xp, double* r) {
  using G = GenLot<T>;
  const auto w = req.capacity;
  const std::size_t n = w.size();
  const LotsAndBase<T> in(req);
  const T* const bp = in.bp;
  auto lot = [&in](std::size_t i) { return in.lot(i); };
  Sum reach_p[kParts] = {}, slope_p[kParts] = {}, lots_amt_p[kParts] = {};
  u64 live_p[kParts] = {}, pairs_p[kParts] = {};
  double top_p[kParts] = {};
  FullLevelHistogram full_levels[kParts];
  for_slices(n, [&, xp, r](std::size_t p, std::size_t b, std::size_t e) {
    // sums in locals, stored once per slice: the slices' totals share a cache line, which the
    // threads would otherwise pass back and forth on every winner
    Sum reach_s = 0, slope_s = 0, lots_s = 0;
    u64 live_s = 0, pairs_s = 0;
    double top_s = 0;
    for (std::size_t i = b; i < e; ++i) {
      const u64 L = G::lots(w[i], lot(i), bp[i]);
      xp[i] = static_cast<T>(L);
      r[i] = L > 0 ? static_cast<double>(bp[i]) / static_cast<double>(lot(i)) : 0.0;
      if (L == 0) continue;
      reach_s += static_cast<Sum>(static_cast<T>(L) * lot(i));
      slope_s += static_cast<Sum>(bp[i]);
      lots_s += static_cast<Sum>(lot(i));
      live_s += 1, pairs_s += L;
      const double amount = static_cast<double>(L) * static_cast<double>(lot(i));
      const double full_level = amount / static_cast<double>(bp[i]);
      top_s = std::max(top_s, full_level);
      full_levels[p].add(full_level, amount, static_cast<double>(bp[i]), static_cast<double>(lot(i)));
    }
    reach_p[p] = reach_s, slope_p[p] = slope_s, lots_amt_p[p] = lots_s;
    live_p[p] = live_s, pairs_p[p] = pairs_s, top_p[p] = top_s;
  });
  LotsFirstPass<Sum> out;
  for (std::size_t p = 0; p < kParts; ++p) {
    out.reach += reach_p[p], out.nlive += live_p[p], out.total_pairs += pairs_p[p];
    out.slope0 += static_cast<double>(slope_p[p]), out.lot_live += static_cast<double>(lots_amt_p[p]);
    out.top = std::max(out.top, top_p[p]);
    out.full_levels.merge(full_levels[p]);
  }
  return out;
}

// The amount A(c) of the lots at or below level c, how many lots that is, and the base of the
// winners not yet full there (dA/dc, ignoring the floors).
template <class Sum>
struct LevelCount {
  Sum amount;
  u64 lots;
  double open;
};

// The general search's bracket: levels lo < hi with A(lo) < budget <= A(hi), narrowed by
// counting passes at two probes each.
template <class Sum>
struct LevelBracket {
  double lo, hi;
  LevelCount<Sum> alo, ahi;
  bool hi_pivot = false;   // hi is a counted level, not the first bound
  double widen = 1.0;      // doubles while the probes miss the level
  double last_step = 0.0;  // the previous Newton step from below (0: none yet)

  // Where the next pass counts (lo < p1 <= p2 <= hi). B: the budget; slope0: the live base;
  // noise: how far the floors can move A; start: the histogram's estimate (first pass only).
  std::pair<double, double> probes(int iter, double B, double slope0, double lot_live, double noise,
                                   const FullLevelHistogram::Estimate& start) {
    // A is concave (a sum of capped lines, up to the floors' noise): a Newton step from below
    // (slope: the base still open at lo) lands below the level sought, a secant through lo and
    // hi lands above it. The probes go just below the one and just above the other.
    const double newton_slope = alo.open > 0 ? alo.open : slope0;
    const double newton =
        lo + (B - static_cast<double>(alo.amount) + (iter == 0 ? 0.5 * lot_live : 0.0)) / newton_slope;
    const double d_low = widen * noise / newton_slope;
    double p1 = newton - d_low, p2;
    if (iter == 0 && start.level > 0 && start.level < hi) {
      // around the histogram's estimate: within the floors' noise on a line, else within a
      // small part of a bucket (1/16 octave)
      const double d_start = start.on_a_line ? 2.0 * d_low : std::max(d_low, start.level * 0x1p-12);
      p1 = start.level - d_start, p2 = start.level + d_start;
    } else if (hi_pivot) {
      const double secant_slope = static_cast<double>(ahi.amount - alo.amount) / (hi - lo);
      const double secant = lo + (B - static_cast<double>(alo.amount)) / secant_slope;
      p2 = std::max(secant, newton) + widen * noise / secant_slope;
      // A quadratic through A(lo), A(hi) and the slope at lo lands between the two: probe
      // around it, a tenth of their gap either side, when that stays between them.
      const double H = hi - lo, k = (newton_slope * H - static_cast<double>(ahi.amount - alo.amount)) / (H * H);
      const double c = B - static_cast<double>(alo.amount), disc = newton_slope * newton_slope - 4.0 * k * c;
      if (k > 0 && disc > 0 && secant > newton) {
        const double quad = lo + 2.0 * c / (newton_slope + std::sqrt(disc));  // the smaller root, stably
        const double d_quad = std::max(d_low, 0.1 * (secant - newton));
        if (quad - d_quad > p1 && quad + d_quad < p2) p1 = quad - d_quad, p2 = quad + d_quad;
      }
    } else {
      // Newton steps converge quadratically: after a step of size h following one of size h0,
      // about h^3 / h0^2 is left; reaching twice that above the step brackets the level.
      const double step = newton - lo;
      double d_high = d_low;
      if (last_step > 0 && step > 0) d_high = std::max(d_high, 2.0 * step * (step / last_step) * (step / last_step));
      last_step = step;
      p2 = newton + d_high;
    }
    if (!(p1 > lo && p1 < hi)) p1 = lo + (hi - lo) * 0.25;
    if (!(p2 > p1 && p2 < hi)) p2 = p1 + (hi - p1) * 0.5;
    p1 = std::max(p1, std::nextafter(lo, hi));
    p2 = std::min(std::max(p2, p1), hi);
    return {p1, p2};
  }

  // The counts at the probes narrow the bracket.
  void narrow(double p1, double p2, const LevelCount<Sum>& a1, const LevelCount<Sum>& a2, Sum budget) {
    if (a1.amount < budget) lo = p1, alo = a1;
    if (a2.amount < budget) lo = p2, alo = a2;
    if (a2.amount >= budget && p2 < hi) hi = p2, ahi = a2, hi_pivot = true;
    if (a1.amount >= budget && p1 < hi) hi = p1, ahi = a1, hi_pivot = true;
    widen = (a1.amount < budget && a2.amount >= budget) ? 1.0 : widen * 2.0;
  }
};

template <class T>
std::vector<T> min_max_lots_general(const AllocRequest<T>& req, T budget) {
  using G = GenLot<T>;
  using Sum = std::conditional_t<std::is_same_v<T, double>, double, u64>;  // exact: at most sum w
  const auto w = req.capacity;
  const std::size_t n = w.size();
  const LotsAndBase<T> in(req);
  const T* const bp = in.bp;
  auto lot = [&in](std::size_t i) { return in.lot(i); };
  std::vector<T> x(n, T{0});
  // L_i is cached in x and r_i = b_i / lot_i (the float estimate of the count's slope) in scratch
  T* const xp = x.data();
  const Scratch<double, 1> ratio(n);
  double* const r = ratio.get();
  LotsFirstPass<Sum> first = lots_first_pass<T, Sum>(req, xp, r);
  const Sum reach = first.reach;
  budget = budget_or_clip(budget, static_cast<T>(reach), req);
  const bool all = static_cast<Sum>(budget) == reach;
  bool all_of_it = all;
  if constexpr (std::is_same_v<T, double>) all_of_it = all || budget > reach * (1 - 1e-15);
  if (budget == 0 || all_of_it) {
    for (std::size_t i = 0; i < n; ++i) x[i] = budget == 0 ? T{0} : static_cast<T>(x[i] * lot(i));
    return x;
  }
  using At = LevelCount<Sum>;
  // amount, lot count and live base at two levels, in one pass
  // With `collect` (a pass expected to be the last), it also does the finishing pass's work:
  // each winner's amount at or below c1 replaces its lot count in x, and the lots in (c1, c2]
  // go to between[p] (up to `cap` per slice; more sets overflow[p]).
  std::vector<LotBetween> between[kParts];
  bool overflow[kParts] = {};
  auto count2 = [&](double c1, double c2, At& r1, At& r2, auto collect, u64 cap) {
    const auto l1 = G::level(c1), l2 = G::level(c2);
    At a[kParts][2] = {};
    for_slices(n, [&](std::size_t p, std::size_t b, std::size_t e) {
      Sum m1 = 0, m2 = 0;
      u64 k1 = 0, k2 = 0;
      Sum o1 = 0, o2 = 0;
      std::vector<LotBetween> mine;  // a slice's own vector: the slices' headers share cache lines
      bool over = false;
      for (std::size_t i = b; i < e; ++i) {
        const T li = lot(i);
        const u64 L = static_cast<u64>(xp[i]);
        if (L == 0) continue;
        bool f1, f2;
        const u64 c1i = G::count(l1, c1 * r[i], bp[i], li, L, f1), c2i = G::count(l2, c2 * r[i], bp[i], li, L, f2);
        m1 += static_cast<Sum>(static_cast<T>(c1i) * li), m2 += static_cast<Sum>(static_cast<T>(c2i) * li);
        k1 += c1i, k2 += c2i;
        o1 += f1 ? Sum{0} : static_cast<Sum>(bp[i]), o2 += f2 ? Sum{0} : static_cast<Sum>(bp[i]);
        if constexpr (decltype(collect)::value) {
          xp[i] = static_cast<T>(static_cast<T>(c1i) * li);
          if (!over && c2i > c1i) {
            over = c2i - c1i > cap - std::min<u64>(cap, mine.size());
            for (u64 m = c1i + 1; !over && m <= c2i; ++m) mine.push_back({m, static_cast<u32>(i)});
          }
        }
      }
      a[p][0] = {m1, k1, static_cast<double>(o1)}, a[p][1] = {m2, k2, static_cast<double>(o2)};
      if constexpr (decltype(collect)::value) between[p] = std::move(mine), overflow[p] = over;
    });
    r1 = r2 = At{0, 0, 0.0};
    for (std::size_t p = 0; p < kParts; ++p) {
      r1.amount += a[p][0].amount, r1.lots += a[p][0].lots, r1.open += a[p][0].open;
      r2.amount += a[p][1].amount, r2.lots += a[p][1].lots, r2.open += a[p][1].open;
    }
  };
  const double B = static_cast<double>(budget);
  const u64 nlive = first.nlive;
  LevelBracket<Sum> bracket{0.0, first.top * 2.0 + std::numeric_limits<double>::min(), At{0, 0, first.slope0},
                            At{reach, first.total_pairs, 0.0}};
  const FullLevelHistogram::Estimate start = first.full_levels.estimate(B);
  const double avg_lot = first.lot_live / static_cast<double>(nlive);
  const double noise = (8.0 * std::sqrt(static_cast<double>(nlive)) + 64.0) * avg_lot;
  // the lots left between the levels are ordered exactly by the finish: up to a few hundred
  // thousand of them cost less than another pass over every winner
  const u64 window = static_cast<u64>(4.0 * (8.0 * std::sqrt(static_cast<double>(nlive)) + 64.0)) + 262144;
  for (int iter = 0; iter < 4000 && bracket.ahi.lots - bracket.alo.lots > window; ++iter) {
    if (std::nextafter(bracket.lo, bracket.hi) >= bracket.hi) break;
    const auto [p1, p2] = bracket.probes(iter, B, first.slope0, first.lot_live, noise, start);
    At a1, a2;
    const Sum b = static_cast<Sum>(budget);
    // the lots between the probes, from the open base at lo: few enough to order at once?
    const double expected_between = (p2 - p1) * std::max(bracket.alo.open, 0.0) / avg_lot;
    if (expected_between * 2.0 < static_cast<double>(window)) {
      count2(p1, p2, a1, a2, std::true_type{}, window);
      bool complete = a1.amount < b && a2.amount >= b;
      for (std::size_t p = 0; p < kParts; ++p) complete = complete && !overflow[p];
      if (complete) {  // the finishing pass is done: order the lots between the probes
        std::vector<LotBetween> pairs = std::move(between[0]);
        for (std::size_t p = 1; p < kParts; ++p) pairs.insert(pairs.end(), between[p].begin(), between[p].end());
        return min_max_lots_select(req, budget, std::move(x), pairs, static_cast<T>(a1.amount));
      }
      // not the last pass after all (rare): x back to the lot counts
      for (auto& v : between) std::vector<LotBetween>().swap(v);
      for_slices(n, [&, xp](std::size_t, std::size_t lo_i, std::size_t hi_i) {
        for (std::size_t i = lo_i; i < hi_i; ++i) xp[i] = static_cast<T>(G::lots(w[i], lot(i), bp[i]));
      });
    } else {
      count2(p1, p2, a1, a2, std::false_type{}, 0);
    }
    bracket.narrow(p1, p2, a1, a2, b);
  }
  // the finishing pass: every lot at or below lo, then the lots in (lo, hi] in order
  At a1, a2;
  count2(bracket.lo, bracket.hi, a1, a2, std::true_type{}, std::numeric_limits<u64>::max());
  std::vector<LotBetween> pairs = std::move(between[0]);
  for (std::size_t p = 1; p < kParts; ++p) pairs.insert(pairs.end(), between[p].begin(), between[p].end());
  return min_max_lots_select(req, budget, std::move(x), pairs, static_cast<T>(bracket.alo.amount));
}

// pro_rata with weights u_i: x_i = min(w_i, tau * u_i) by water-filling.
template <class T>
std::vector<T> weighted_pro_rata(const AllocRequest<T>& req) {
  const T* const wp = req.capacity.data();
  const T* const up = req.weights.data();
  const std::size_t n = req.capacity.size();
  auto clip = [&](T reach) { return budget_or_clip(req.budget, reach, req); };
  if constexpr (std::is_same_v<T, double>) {
    return water_fill_float(n, [=](std::size_t i) { return WfItem<double>{wp[i], up[i]}; }, req.budget, clip);
  } else {
    auto uclip = [&](u64 reach) { return static_cast<u64>(clip(static_cast<i64>(reach))); };
    return water_fill_exact(
        std::vector<i64>(n),
        [=](std::size_t i) { return WfItem<u64>{static_cast<u64>(wp[i]), static_cast<u64>(up[i])}; },
        static_cast<u64>(req.budget), uclip);
  }
}

// capped_pro_rata / risk_aware with a base b_i: K_i = min(w_i, cap_i * b_i) (cap defaults to 1),
// x_i = min(K_i, tau * v_i) with v_i = b_i (capped) or the pull weights computed from b_i.
template <class T>
std::vector<T> based_water_fill(const AllocRequest<T>& req, const T* vp) {
  const T* const wp = req.capacity.data();
  const T* const bp = req.base.data();
  const T* const cp = req.cap.data();
  const std::size_t n = req.capacity.size(), cstep = req.cap.size() == 1 ? 0 : 1;
  const bool capped = !req.cap.empty();
  auto clip = [&](T reach) { return budget_or_clip(req.budget, reach, req); };
  if constexpr (std::is_same_v<T, double>) {
    return water_fill_float(
        n,
        [=](std::size_t i) { return WfItem<double>{std::min(wp[i], capped ? bp[i] * cp[i * cstep] : bp[i]), vp[i]}; },
        req.budget, clip);
  } else {
    std::vector<i64> x(n);
    i64* const xp = x.data();
    for_slices(n, [=](std::size_t, std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i)
        xp[i] = std::min(wp[i], capped ? static_cast<i64>(cap_amount(bp[i], cp[i * cstep])) : bp[i]);
    });
    const u64* const vu = reinterpret_cast<const u64*>(vp);
    auto uclip = [&](u64 reach) { return static_cast<u64>(clip(static_cast<i64>(reach))); };
    return water_fill_exact(
        std::move(x), [=](std::size_t i) { return WfItem<u64>{static_cast<u64>(xp[i]), vu[i]}; },
        static_cast<u64>(req.budget), uclip);
  }
}

// ---------------------------------------------------------------- the entry point

// Checks every field of the request for its policy; returns the total capacity (exact mode:
// it must fit in int64).
template <class T>
T validated_total(const AllocRequest<T>& req) {
  const auto w = req.capacity;
  const std::size_t n = w.size();
  const Policy pol = req.policy;
  if (!is_kernel_policy(pol))
    throw InvalidInput(std::string("policy: '") + policy_name(pol) +
                       "' is a waterfall policy, not one of the allocation kernel (expected queue, pro_rata, "
                       "capped_pro_rata, risk_aware, min_max_lots or random_walk)");
  if (n >= (std::size_t{1} << 32)) throw InvalidInput("capacity: at most 2^32 - 1 winners");
  if constexpr (std::is_same_v<T, double>) {
    if (!std::isfinite(req.budget)) throw InvalidInput("budget: " + num_str(req.budget) + " is not a finite number");
  }
  if (req.budget < 0) throw InvalidInput("budget: " + num_str(req.budget) + " must not be negative");
  const auto wsum = check_capacity(w);
  require(!req.score.empty(), "score", pol, pol == Policy::Queue);
  require(!req.leverage.empty(), "leverage", pol, pol == Policy::RiskAware);
  if (pol != Policy::RiskAware) require(!req.cap.empty(), "cap", pol, pol == Policy::CappedProRata);
  if (req.lot.has_value() && !req.lots.empty())
    throw InvalidInput("lot: give one lot size or one per winner, not both");
  require(req.lot.has_value() || !req.lots.empty(), "lot", pol, pol == Policy::MinMaxLots);
  if (req.lot.has_value()) check_lot(*req.lot, "lot");
  if (!req.lots.empty()) {
    check_length(req.lots, n, "lot", false);
    for (std::size_t i = 0; i < n; ++i)
      if (!(req.lots[i] > 0 && req.lots[i] <= std::numeric_limits<T>::max()))
        check_lot(req.lots[i], at("lot", i).c_str());  // throws
  }
  if (!req.weights.empty()) require(true, "weights", pol, pol == Policy::ProRata);
  if (!req.base.empty())
    require(true, "base", pol, pol == Policy::CappedProRata || pol == Policy::RiskAware || pol == Policy::MinMaxLots);
  check_side_sum(req.weights, n, "weights");
  check_side_sum(req.base, n, "base");
  if (pol != Policy::RiskAware && req.g.kind != RiskFunction::Kind::Linear)
    throw InvalidInput(std::string("g is not used by policy '") + policy_name(pol) + "'");
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
    total = wsum;
    if (!std::isfinite(total)) throw InvalidInput("capacity: the total is not a finite number");
  } else {
    const u128 t = wsum;
    if (t > static_cast<u128>(std::numeric_limits<i64>::max()))
      throw ArithmeticOverflow("capacity: the total capacity does not fit in int64");
    total = static_cast<i64>(t);
  }
  return total;
}

// Pro-rata: x_i = B w_i / W (or by the given weights).
template <class T>
std::vector<T> pro_rata_alloc(const AllocRequest<T>& req, T total) {
  const auto w = req.capacity;
  const std::size_t n = w.size();
  if (!req.weights.empty()) return weighted_pro_rata(req);
  const T budget = budget_or_clip(req.budget, total, req);
  if constexpr (std::is_same_v<T, double>) {
    std::vector<double> x(n, 0.0);
    if (budget > 0)
      for (std::size_t i = 0; i < n; ++i) x[i] = std::min(w[i], budget * (w[i] / total));
    return x;
  } else {
    // no winner saturates below the full budget: tau = B / W, straight to the rounding
    const u64* wu = reinterpret_cast<const u64*>(w.data());
    auto get = [wu](std::size_t i) { return WfItem<u64>{wu[i], wu[i]}; };
    const u64 b = static_cast<u64>(budget), t = static_cast<u64>(total);
    std::vector<i64> x(n);
    if (b == t) {
      water_round_exact(x.data(), n, get, b, 0, 0);
    } else {
      water_round_exact(x.data(), n, get, b, b, t);
    }
    return x;
  }
}

// Risk-aware: the pull weights v_i (float mode: w_i * rho_i, exact mode: src_i * rho_i in
// fixed point), written into vb; rho_i = r_i / max r.
template <class T>
void risk_pull_weights(const AllocRequest<T>& req, T* const vb, const T* const src, T src_total) {
  const std::size_t n = req.capacity.size();
  double rmaxs[kParts] = {};
  for_slices(n, [&](std::size_t p, std::size_t b, std::size_t e) { rmaxs[p] = risk_weights(req, vb, b, e); });
  const double rmax = *std::max_element(rmaxs, rmaxs + kParts);
  if constexpr (std::is_same_v<T, double>) {
    for_slices(n, [&](std::size_t, std::size_t b, std::size_t e) {
      for (std::size_t i = b; i < e; ++i) vb[i] = src[i] * (rmax > 0 ? vb[i] / rmax : 0.0);
    });
  } else {
    const int s = std::clamp(62 - static_cast<int>(std::bit_width(static_cast<u64>(src_total))), 0, 32);
    for_slices(n, [&](std::size_t, std::size_t b, std::size_t e) {
      for (std::size_t i = b; i < e; ++i) {
        const double rho = rmax > 0 ? std::bit_cast<double>(vb[i]) / rmax : 0.0;
        // floor of a value in [0, 2^32 + 1/2]: truncation through int64 (no library call)
        const u64 rh = static_cast<u64>(static_cast<i64>(rho * 4294967296.0 + 0.5));
        const u128 prod = mulw(static_cast<u64>(src[i]), rh);
        vb[i] = static_cast<i64>(s == 32 ? static_cast<u64>(prod)
                                         : static_cast<u64>((prod + (u128{1} << (31 - s))) >> (32 - s)));
      }
    });
  }
}

// Capped pro-rata and risk-aware: the water-fill of the pull weights under the caps.
template <class T>
std::vector<T> water_fill_alloc(const AllocRequest<T>& req, T total) {
  const auto w = req.capacity;
  const std::size_t n = w.size();
  const Policy pol = req.policy;
  const auto cap = req.cap;
  const T* cp = cap.data();
  const std::size_t cstep = cap.size() == 1 ? 0 : 1;  // one cap for everyone, or one each
  const bool capped = !cap.empty();
  // risk_aware: the pull weights v_i (float mode: w_i * rho_i), computed once
  std::optional<Scratch<T, 0>> vbuf;
  // the pull weights come from the base when one is given (the fraction taken is of it)
  const T* const src = req.base.empty() ? w.data() : req.base.data();
  T src_total = total;
  if (!req.base.empty()) {
    src_total = T{0};
    for (std::size_t i = 0; i < n; ++i) src_total += src[i];  // checked to fit above
  }
  if (pol == Policy::RiskAware) {
    // r_i first, then v_i in its place (one buffer: a fresh array costs page faults)
    vbuf.emplace(n);
    risk_pull_weights(req, vbuf->get(), src, src_total);
  }
  const T* const vp = vbuf ? vbuf->get() : w.data();
  if (!req.base.empty()) return based_water_fill(req, vbuf ? vbuf->get() : src);
  const T* const wp = w.data();
  auto clip = [&](T reach) { return budget_or_clip(req.budget, reach, req); };
  if constexpr (std::is_same_v<T, double>) {
    if (capped)
      return water_fill_float(
          n, [=](std::size_t i) { return WfItem<double>{wp[i] * cp[i * cstep], vp[i]}; }, req.budget, clip);
    return water_fill_float(n, [=](std::size_t i) { return WfItem<double>{wp[i], vp[i]}; }, req.budget, clip);
  } else {
    const u64* const vu = reinterpret_cast<const u64*>(vp);
    auto uclip = [&](u64 reach) { return static_cast<u64>(clip(static_cast<i64>(reach))); };
    const u64 b = static_cast<u64>(req.budget);
    std::vector<i64> x(n);
    if (capped) {
      // K_i = floor(w_i c_i / 1e8) once, cached in x: the later passes read it back
      i64* const xp = x.data();
      if (cstep == 0) {
        for_slices(n, [=](std::size_t, std::size_t lo, std::size_t hi) {
          for (std::size_t i = lo; i < hi; ++i) xp[i] = static_cast<i64>(cap_amount(wp[i], cp[0]));
        });
      } else {
        for_slices(n, [=](std::size_t, std::size_t lo, std::size_t hi) {
          for (std::size_t i = lo; i < hi; ++i) xp[i] = static_cast<i64>(cap_amount(wp[i], cp[i]));
        });
      }
      return water_fill_exact(
          std::move(x), [=](std::size_t i) { return WfItem<u64>{static_cast<u64>(xp[i]), vu[i]}; }, b, uclip);
    }
    return water_fill_exact(
        std::move(x), [=](std::size_t i) { return WfItem<u64>{static_cast<u64>(wp[i]), vu[i]}; }, b, uclip);
  }
}

template <class T>
std::vector<T> allocate_impl(const AllocRequest<T>& req) {
  const T total = validated_total(req);
  switch (req.policy) {
    case Policy::Queue:
      return queue_alloc(req, budget_or_clip(req.budget, total, req));
    case Policy::RandomWalk:
      return random_walk_alloc(req, budget_or_clip(req.budget, total, req));
    case Policy::MinMaxLots:
      if (req.lots.empty() && req.base.empty()) return min_max_lots_alloc(req, req.budget);
      return min_max_lots_general(req, req.budget);
    case Policy::ProRata:
      return pro_rata_alloc(req, total);
    case Policy::CappedProRata:
    case Policy::RiskAware:
      return water_fill_alloc(req, total);
    case Policy::FundingIndex:
    case Policy::None:
      break;  // refused at the top: waterfall policies, not the kernel's
  }
  throw InvalidInput("unknown policy");
}

}  // namespace

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

std::vector<i64> allocate(const AllocRequest<i64>& req) {
  if (req.threads < 0) throw InvalidInput("threads must not be negative (got " + std::to_string(req.threads) + ")");
  const PassThreadsScope threads(req.threads);
  return allocate_impl(req);
}
std::vector<double> allocate(const AllocRequest<double>& req) {
  if (req.threads < 0) throw InvalidInput("threads must not be negative (got " + std::to_string(req.threads) + ")");
  const PassThreadsScope threads(req.threads);
  return allocate_impl(req);
}

}  // namespace deleverage
