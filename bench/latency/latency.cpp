// Per-operation latency of the C++ core on a large book, from C++ (no Python anywhere):
//   trade          Engine::trade between two accounts that already hold the market
//   margin_after   Engine::account_margin of the buyer, right after that trade
//   margin_cold    Engine::account_margin of a random account (no trade before it)
//   adl_fill       Engine::adl_fill of 1 lot between a long and a short of one market
// Each call is timed on its own with std::chrono::steady_clock and recorded in a log-linear
// histogram (HDR-style: 64 sub-buckets per power of two, so a reported value is at most
// 1/64 above the true one). The ops are interleaved in one loop so that machine noise hits
// them alike. Reported values include the clock's own cost (printed as clock_overhead).
//
//   deleverage_latency [--positions N] [--markets M] [--samples S] [--seed X] [--json PATH]
//
// Defaults: 1,000,000 positions (4 per account, accounts paired long/short), 16 markets,
// 1,000,000 samples per op. Target (issue "durability, determinism and the C++ embedding
// API"): p99 of margin_after <= 1 us.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cli.hpp"
#include "deleverage/engine.hpp"

using deleverage::Engine;
using deleverage::i64;
using deleverage::MarketId;
using Clock = std::chrono::steady_clock;

namespace {

// Counts of nanosecond values in log-linear buckets: exact below 128 ns, then 64 buckets
// per power of two.
class Histogram {
 public:
  static constexpr int kSubBits = 6;
  static constexpr std::uint64_t kSub = 1ull << kSubBits;  // 64

  void record(std::uint64_t ns) {
    ++counts_[index(ns)];
    ++total_;
    sum_ += ns;
    max_ = std::max(max_, ns);
    min_ = std::min(min_, ns);
  }
  std::uint64_t count() const { return total_; }
  std::uint64_t max() const { return max_; }
  std::uint64_t min() const { return total_ ? min_ : 0; }
  double mean() const { return total_ ? static_cast<double>(sum_) / static_cast<double>(total_) : 0.0; }
  // The smallest recorded bucket's upper bound below which at least fraction q of the values lie.
  std::uint64_t percentile(double q) const {
    if (total_ == 0) return 0;
    const auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total_)));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= std::max<std::uint64_t>(rank, 1)) return std::min(upper(i), max_);
    }
    return max_;
  }

 private:
  static std::size_t index(std::uint64_t v) {
    if (v < 2 * kSub) return static_cast<std::size_t>(v);
    const int msb = 63 - std::countl_zero(v);
    const int shift = msb - kSubBits;  // keeps the top 7 bits: (v >> shift) in [64, 128)
    return static_cast<std::size_t>(kSub + static_cast<std::uint64_t>(shift) * kSub + ((v >> shift) - kSub));
  }
  static std::uint64_t upper(std::size_t i) {
    if (i < 2 * kSub) return i;
    const std::uint64_t shift = (i - kSub) / kSub;
    const std::uint64_t top = kSub + (i - kSub) % kSub;
    return ((top + 1) << shift) - 1;
  }
  std::array<std::uint64_t, kSub + kSub * 58> counts_{};
  std::uint64_t total_ = 0, sum_ = 0, max_ = 0, min_ = UINT64_MAX;
};

std::uint64_t ns_between(Clock::time_point a, Clock::time_point b) {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
}

struct Args {
  std::size_t positions = 1'000'000;
  int markets = 16;
  std::size_t samples = 1'000'000;
  std::uint64_t seed = 7;
  std::string json;
};

Args parse(int argc, char** argv) {
  Args a;
  deleverage::bench::parse_flags(argc, argv, [&](const std::string& k, const std::string& v) {
    if (k == "--positions")
      a.positions = std::stoull(v);
    else if (k == "--markets")
      a.markets = std::stoi(v);
    else if (k == "--samples")
      a.samples = std::stoull(v);
    else if (k == "--seed")
      a.seed = std::stoull(v);
    else if (k == "--json")
      a.json = v;
    else
      return false;
    return true;
  });
  if (a.markets < 4) {
    std::fprintf(stderr, "--markets must be at least 4\n");
    std::exit(2);
  }
  if (a.positions < 8) {
    std::fprintf(stderr, "--positions must be at least 8\n");
    std::exit(2);
  }
  return a;
}

// Snapshot write/read throughput: HOOK for the durability work (Engine snapshots). Return
// {write bytes/s, read bytes/s} measured on `e` once snapshots exist; nullopt until then.
struct SnapshotThroughput {
  double write_bytes_per_s, read_bytes_per_s;
  std::size_t bytes;
};
std::optional<SnapshotThroughput> measure_snapshot(Engine& /*e*/) { return std::nullopt; }

constexpr int kPerAccount = 4;  // positions per account
constexpr i64 kPrice = 20'000;  // ticks (2000.0)

MarketId market_of(std::size_t pair, int k, int markets) {
  // 4 distinct markets per pair: pair, pair + M/4, pair + M/2, pair + 3M/4 (mod M)
  return static_cast<MarketId>((pair + static_cast<std::size_t>(k) * static_cast<std::size_t>(markets / 4)) %
                               static_cast<std::size_t>(markets));
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  const std::size_t accounts = std::max<std::size_t>(2, (args.positions / kPerAccount) & ~std::size_t{1});
  const std::size_t pairs = accounts / 2;
  const std::size_t positions = accounts * kPerAccount;

  // ---- the book: pairs (2i long, 2i+1 short) in 4 markets each, sizes 500..1499 lots
  Engine e(6, 0);
  for (int m = 0; m < args.markets; ++m) {
    deleverage::MarketSpec s;
    s.symbol = "M" + std::to_string(m);
    s.qty_decimals = 3;
    s.price_decimals = 1;
    s.maintenance_rate = 5'000'000;  // 5%
    s.initial_rate = 10'000'000;     // 10%
    if (m % 2 == 1)                  // half the markets tiered, so the tier walk is on the measured path
      s.tiers = {deleverage::TierSpec{2'000'000'000, 4'000'000, 8'000'000, -1},
                 deleverage::TierSpec{0, 6'000'000, 12'000'000, -1}};
    e.add_market(s);
  }
  const auto t_build = Clock::now();
  {
    std::vector<i64> ids(accounts), amounts(accounts, 100'000'000'000);  // $100k each
    for (std::size_t a = 0; a < accounts; ++a) ids[a] = static_cast<i64>(1'000'000 + a);
    e.deposit(ids, amounts);
    std::vector<i64> acc, size, price;
    std::vector<MarketId> mk;
    acc.reserve(positions);
    size.reserve(positions);
    price.reserve(positions);
    mk.reserve(positions);
    for (std::size_t p = 0; p < pairs; ++p)
      for (int k = 0; k < kPerAccount; ++k)
        for (int side = 0; side < 2; ++side) {
          const i64 q = 500 + static_cast<i64>((p * 7 + static_cast<std::size_t>(k)) % 1000);
          acc.push_back(ids[2 * p + static_cast<std::size_t>(side)]);
          mk.push_back(market_of(p, k, args.markets));
          size.push_back(side == 0 ? q : -q);
          price.push_back(kPrice);
        }
    e.load_positions(acc, mk, size, price);
    std::vector<MarketId> all(static_cast<std::size_t>(args.markets));
    std::vector<i64> marks(all.size());
    for (std::size_t m = 0; m < all.size(); ++m) {
      all[m] = static_cast<MarketId>(m);
      marks[m] = kPrice - 50 + static_cast<i64>(m);
    }
    e.set_marks(all, marks);
  }
  const double build_s = std::chrono::duration<double>(Clock::now() - t_build).count();

  // ---- the random choices, drawn before timing
  std::mt19937_64 rng(args.seed);
  const std::size_t warm = std::min<std::size_t>(args.samples, 20'000);
  const std::size_t n = args.samples + warm;
  std::vector<std::uint32_t> trade_pair(n), adl_pair(n), cold_acc(n);
  std::vector<std::uint8_t> trade_k(n), adl_k(n), buy_long(n);
  std::vector<i64> trade_px(n);
  for (std::size_t i = 0; i < n; ++i) {
    trade_pair[i] = static_cast<std::uint32_t>(rng() % pairs);
    adl_pair[i] = static_cast<std::uint32_t>(rng() % pairs);
    cold_acc[i] = static_cast<std::uint32_t>(rng() % accounts);
    trade_k[i] = static_cast<std::uint8_t>(rng() % kPerAccount);
    adl_k[i] = static_cast<std::uint8_t>(rng() % kPerAccount);
    buy_long[i] = static_cast<std::uint8_t>(rng() & 1);
    trade_px[i] = kPrice - 100 + static_cast<i64>(rng() % 200);
  }
  // ADL fills shrink positions by 1 lot; each position starts with >= 500 lots, so fail
  // loudly rather than silently measuring a closing position if a pair is drawn too often.
  {
    std::vector<std::uint16_t> hits(pairs * kPerAccount, 0);
    for (std::size_t i = 0; i < n; ++i)
      if (++hits[adl_pair[i] * kPerAccount + adl_k[i]] >= 400) {
        std::fprintf(stderr, "too many samples for the book\n");
        return 2;
      }
  }

  // ---- the measured loop
  Histogram h_trade, h_after, h_cold, h_adl, h_clock;
  i64 sink = 0;
  const i64 id0 = 1'000'000;
  for (std::size_t i = 0; i < n; ++i) {
    const bool record = i >= warm;
    {  // trade, then the buyer's margin check
      const std::size_t p = trade_pair[i];
      const MarketId m = market_of(p, trade_k[i], args.markets);
      const i64 lng = id0 + static_cast<i64>(2 * p), sht = lng + 1;
      const i64 buyer = buy_long[i] ? lng : sht, seller = buy_long[i] ? sht : lng;
      const auto t0 = Clock::now();
      e.trade(buyer, seller, m, 1, trade_px[i]);
      const auto t1 = Clock::now();
      const deleverage::AccountMargin am = e.account_margin(buyer);
      const auto t2 = Clock::now();
      sink += am.equity;
      if (record) {
        h_trade.record(ns_between(t0, t1));
        h_after.record(ns_between(t1, t2));
      }
    }
    {  // one ADL fill: the long of the pair is the bankrupt side
      const std::size_t p = adl_pair[i];
      const MarketId m = market_of(p, adl_k[i], args.markets);
      const i64 lng = id0 + static_cast<i64>(2 * p);
      const auto t0 = Clock::now();
      e.adl_fill(lng, lng + 1, m, 1, kPrice - 300);
      const auto t1 = Clock::now();
      if (record) h_adl.record(ns_between(t0, t1));
    }
    {  // a cold margin check
      const i64 a = id0 + static_cast<i64>(cold_acc[i]);
      const auto t0 = Clock::now();
      const deleverage::AccountMargin am = e.account_margin(a);
      const auto t1 = Clock::now();
      sink += am.maintenance;
      if (record) h_cold.record(ns_between(t0, t1));
    }
    {  // the clock itself
      const auto t0 = Clock::now();
      const auto t1 = Clock::now();
      if (record) h_clock.record(ns_between(t0, t1));
    }
  }
  e.check_invariants();  // the book is still consistent after every measured operation
  const std::optional<SnapshotThroughput> snap = measure_snapshot(e);

  // ---- report
  struct Row {
    const char* name;
    const Histogram* h;
  };
  const Row rows[] = {{"trade", &h_trade},
                      {"margin_after_trade", &h_after},
                      {"margin_cold", &h_cold},
                      {"adl_fill", &h_adl},
                      {"clock_overhead", &h_clock}};
  std::printf(
      "# deleverage C++ latency: %zu positions, %zu accounts, %d markets, %zu samples per op (book built in %.2f s)\n",
      positions, accounts, args.markets, args.samples, build_s);
  std::printf("%-20s %10s %10s %10s %10s %10s\n", "op (ns)", "p50", "p99", "p99.9", "max", "mean");
  for (const Row& r : rows)
    std::printf(
        "%-20s %10llu %10llu %10llu %10llu %10.1f\n", r.name, static_cast<unsigned long long>(r.h->percentile(0.50)),
        static_cast<unsigned long long>(r.h->percentile(0.99)), static_cast<unsigned long long>(r.h->percentile(0.999)),
        static_cast<unsigned long long>(r.h->max()), r.h->mean());
  const std::uint64_t p99_after = h_after.percentile(0.99);
  std::printf("target: margin_after_trade p99 <= 1000 ns: %s (%llu ns)\n", p99_after <= 1000 ? "met" : "NOT met",
              static_cast<unsigned long long>(p99_after));
  std::printf("snapshot: %s\n", snap ? "measured" : "not measured (hook: measure_snapshot)");
  if (!args.json.empty()) {
    std::ofstream out(args.json);
    out << "{\n  \"positions\": " << positions << ",\n  \"accounts\": " << accounts
        << ",\n  \"markets\": " << args.markets << ",\n  \"samples\": " << args.samples
        << ",\n  \"seed\": " << args.seed << ",\n  \"build_seconds\": " << build_s << ",\n  \"ops\": {\n";
    for (std::size_t i = 0; i < std::size(rows); ++i) {
      const Histogram& h = *rows[i].h;
      out << "    \"" << rows[i].name << "\": {\"count\": " << h.count() << ", \"p50_ns\": " << h.percentile(0.5)
          << ", \"p99_ns\": " << h.percentile(0.99) << ", \"p999_ns\": " << h.percentile(0.999)
          << ", \"max_ns\": " << h.max() << ", \"min_ns\": " << h.min() << ", \"mean_ns\": " << h.mean() << "}"
          << (i + 1 < std::size(rows) ? "," : "") << "\n";
    }
    out << "  },\n  \"target_margin_after_trade_p99_ns\": 1000,\n  \"target_met\": "
        << (p99_after <= 1000 ? "true" : "false") << ",\n  \"snapshot\": ";
    if (snap)
      out << "{\"bytes\": " << snap->bytes << ", \"write_bytes_per_s\": " << snap->write_bytes_per_s
          << ", \"read_bytes_per_s\": " << snap->read_bytes_per_s << "}";
    else
      out << "null";
    out << ",\n  \"checksum\": " << sink << "\n}\n";
  }
  return 0;
}
