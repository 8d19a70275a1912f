// The position store: accounts, blocks of position slots, holder lists, and their snapshot
// sections and state-hash part.
#include "deleverage/book.hpp"

#include <algorithm>
#include <atomic>
#include <string>

#include "deleverage/detail/parallel.hpp"
#include "deleverage/errors.hpp"

namespace deleverage::detail {

// Grows a column to hold `needed` elements: exactly on the first bulk call (so a loaded book
// carries no slack), by 1.5x afterwards (so repeated small calls stay amortized O(1)). The
// first bulk call of a large book asks for 2 MB pages (reserve_huge), as a snapshot load
// does: a waterfall step reads the columns at scattered accounts, and with 4 KB pages most
// of those reads also miss the TLB. From two pages on (the accounts' lines of a 1M-position
// book are 6.4 MB).
template <class T>
static void reserve_for(std::vector<T>& v, std::size_t needed) {
  if (needed <= v.capacity()) return;
  if (v.empty() && v.capacity() == 0) {
    reserve_huge(v, needed, 2);
    return;
  }
  v.reserve(std::max(needed, v.capacity() + v.capacity() / 2));
}

void Book::reserve_accounts(std::size_t extra) {
  const std::size_t needed = ids_.size() + extra;
  reserve_for(ids_, needed);
  reserve_for(acc_, needed);
  reserve_for(acc_cap_, needed);
  index_.reserve(needed, ids_);
}

void Book::reserve_positions(std::size_t extra_slots) {
  const std::size_t needed = size_.size() + extra_slots;
  reserve_for(size_, needed);
  reserve_for(entry_, needed);
  reserve_for(market_, needed);
  reserve_for(mslot_, needed);
}

std::uint32_t Book::create_account(i64 id) {
  if (ids_.size() >= AccountIndex::kNone - 1) throw InvalidInput("too many accounts");
  const auto a = static_cast<std::uint32_t>(ids_.size());
  ids_.push_back(id);
  acc_.push_back(AccountHot{});
  acc_cap_.push_back(0);
  index_.insert(id, a, ids_);
  return a;
}

void Book::ensure_capacity(std::uint32_t a, std::uint32_t extra, bool exact_fit) {
  const std::uint32_t count = acc_[a].count;
  if (count + extra <= acc_cap_[a]) return;
  const std::size_t new_cap = exact_fit
                                  ? std::size_t{count} + extra
                                  : std::max<std::size_t>({4, std::size_t{count} * 2, std::size_t{count} + extra});
  const std::size_t start = size_.size();
  if (start + new_cap >= kNoSlot) throw InvalidInput("too many position slots (2^32)");
  reserve_positions(new_cap);
  size_.resize(start + new_cap, 0);
  entry_.resize(start + new_cap, 0);
  market_.resize(start + new_cap, kNoMarket);
  mslot_.resize(start + new_cap, kNoSlot);
  const std::uint32_t old = acc_[a].start;
  for (std::uint32_t i = 0; i < count; ++i) {
    size_[start + i] = size_[old + i];
    entry_[start + i] = entry_[old + i];
    market_[start + i] = market_[old + i];
    mslot_[start + i] = mslot_[old + i];
    market_[old + i] = kNoMarket;
  }
  abandoned_slots_ += acc_cap_[a];
  acc_[a].start = static_cast<std::uint32_t>(start);
  acc_cap_[a] = static_cast<std::uint32_t>(new_cap);
}

void Book::compact_if_wasteful() {
  const std::size_t total = size_.size();
  if (abandoned_slots_ < 4096 || abandoned_slots_ * 2 < total) return;
  std::vector<i64> size, entry;
  std::vector<std::uint16_t> market;
  std::vector<std::uint32_t> mslot;
  size.reserve(live_positions_);
  entry.reserve(live_positions_);
  market.reserve(live_positions_);
  mslot.reserve(live_positions_);
  for (std::size_t a = 0; a < ids_.size(); ++a) {
    const std::uint32_t b = acc_[a].start, n = acc_[a].count;
    acc_[a].start = static_cast<std::uint32_t>(size.size());
    acc_cap_[a] = n;
    for (std::uint32_t s = b; s < b + n; ++s) {
      size.push_back(size_[s]);
      entry.push_back(entry_[s]);
      market.push_back(market_[s]);
      mslot.push_back(mslot_[s]);
    }
  }
  size_.swap(size);
  entry_.swap(entry);
  market_.swap(market);
  mslot_.swap(mslot);
  abandoned_slots_ = 0;
}

void Book::truncate_accounts(std::size_t n) {
  if (ids_.size() == n) return;
  ids_.resize(n);
  acc_.resize(n);
  acc_cap_.resize(n);
  index_.rebuild(ids_);
}

std::size_t Book::memory_bytes() const {
  std::size_t b = 0;
  b += ids_.capacity() * sizeof(i64) + acc_.capacity() * sizeof(AccountHot);
  b += acc_cap_.capacity() * sizeof(std::uint32_t);
  b += index_.memory_bytes();
  b += size_.capacity() * sizeof(i64) + entry_.capacity() * sizeof(i64);
  b += market_.capacity() * sizeof(std::uint16_t) + mslot_.capacity() * sizeof(std::uint32_t);
  for (const std::vector<std::uint32_t>& list : holders_) b += list.capacity() * sizeof(std::uint32_t);
  return b;
}

void Book::read(Reader& r, std::size_t n_markets) {
  constexpr std::size_t kAccountBytes = 8 + 8 + 4;       // id + balance + count
  constexpr std::size_t kPositionBytes = 2 + 8 + 8 + 4;  // market + size + entry + holder slot
  const std::size_t n = r.count<u64>(kAccountBytes, AccountIndex::kNone - 2, "account count");
  reserve_huge(ids_, n);
  reserve_huge(acc_, n);
  reserve_huge(acc_cap_, n);
  ids_.resize(n);
  r.array(ids_.data(), n);
  acc_.resize(n);
  acc_cap_.resize(n);
  const std::byte* balances = r.skip(n * 8);
  const std::byte* counts = r.skip(n * 4);
  u64 total = 0;
  for (std::size_t a = 0; a < n; ++a) {
    const std::uint32_t c = load_le<std::uint32_t>(counts + 4 * a);
    if (c > n_markets) corrupt("account " + std::to_string(ids_[a]) + " holds more positions than there are markets");
    acc_[a].balance = load_le<i64>(balances + 8 * a);
    acc_[a].start = static_cast<std::uint32_t>(total);
    acc_[a].count = c;
    acc_cap_[a] = c;
    total += c;
    if (total >= kNoSlot) corrupt("too many positions");
  }
  index_.reserve(n, ids_);
  for (std::size_t a = 0; a < n; ++a) {
    if (index_.find(ids_[a], ids_) != AccountIndex::kNone)
      corrupt("account id " + std::to_string(ids_[a]) + " appears twice");
    index_.insert(ids_[a], static_cast<std::uint32_t>(a), ids_);
  }
  const std::size_t p = r.count<u64>(kPositionBytes, std::numeric_limits<std::size_t>::max(), "position count");
  if (p != total)
    corrupt("position count " + std::to_string(p) + " does not match the accounts' " + std::to_string(total));
  reserve_huge(market_, p);
  reserve_huge(size_, p);
  reserve_huge(entry_, p);
  reserve_huge(mslot_, p);
  market_.resize(p);
  size_.resize(p);
  entry_.resize(p);
  mslot_.resize(p);
  r.array(market_.data(), p);
  r.array(size_.data(), p);
  r.array(entry_.data(), p);
  r.array(mslot_.data(), p);
  live_positions_ = p;
  abandoned_slots_ = 0;
}

void Book::size_holders(std::size_t n_markets) {
  std::vector<std::size_t> count(n_markets, 0);
  for (std::uint16_t m : market_) {
    if (m >= n_markets) corrupt("position in unknown market " + std::to_string(m));
    ++count[m];
  }
  holders_.resize(n_markets);
  for (std::size_t m = 0; m < n_markets; ++m) holders_[m].assign(count[m], AccountIndex::kNone);
}

void Book::rebuild_holders() {
  for (std::size_t a = 0; a < ids_.size(); ++a) {
    const std::uint32_t b = acc_[a].start, c = acc_[a].count;
    for (std::uint32_t s = b; s < b + c; ++s) {
      std::vector<std::uint32_t>& list = holders_[market_[s]];
      const std::uint32_t ms = mslot_[s];
      if (ms >= list.size() || list[ms] != AccountIndex::kNone)
        corrupt("market holder list of market " + std::to_string(market_[s]) + " is not a permutation");
      list[ms] = static_cast<std::uint32_t>(a);
    }
  }
}

std::pair<u64, u64> Book::hash_accounts(int threads) const {
  const std::size_t n = ids_.size();
  u64 lane_lo = 0, lane_hi = 0;
  std::vector<u64> part_lo(static_cast<std::size_t>(std::max(1, threads)), 0), part_hi(part_lo.size(), 0);
  std::atomic<std::size_t> part_index{0};
  parallel_for(n, threads, 1 << 15, [&](std::size_t b, std::size_t end) {
    u64 lo = 0, hi = 0;
    std::vector<std::uint32_t> order;
    for (std::size_t a = b; a < end; ++a) {
      const std::uint32_t s0 = acc_[a].start, c = acc_[a].count;
      order.resize(c);
      for (std::uint32_t i = 0; i < c; ++i) order[i] = s0 + i;
      std::sort(order.begin(), order.end(), [&](std::uint32_t x, std::uint32_t y) { return market_[x] < market_[y]; });
      Hasher h(0x6163636F756E7421ull);
      h.add(static_cast<u64>(ids_[a]));
      h.add(static_cast<u64>(acc_[a].balance));
      h.add(c);
      for (std::uint32_t s : order) {
        h.add(market_[s]);
        h.add(static_cast<u64>(size_[s]));
        h.add(static_cast<u64>(entry_[s]));
      }
      lo += mix64(h.value() ^ 0x5851F42D4C957F2Dull);
      hi += mix64(h.value() + 0x14057B7EF767814Full);
    }
    const std::size_t k = part_index.fetch_add(1);
    part_lo[k % part_lo.size()] += lo;  // chunks never exceed the thread count
    part_hi[k % part_hi.size()] += hi;
  });
  for (std::size_t k = 0; k < part_lo.size(); ++k) {
    lane_lo += part_lo[k];
    lane_hi += part_hi[k];
  }
  return {lane_lo, lane_hi};
}

}  // namespace deleverage::detail
