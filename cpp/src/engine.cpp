// Engine construction, markets (through the MarketTable), the insurance fund's entry points, and
// the Engine's half of a position change (the cached sums; the storage is the Book's).
#include "deleverage/engine.hpp"

#include <algorithm>
#include <limits>
#include <thread>

namespace deleverage {

Engine::Engine(int money_decimals, int threads) : markets_(money_decimals) {
  threads_ = threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

void Engine::set_threads(int threads) {
  threads_ = threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

i64 Engine::value_at(MarketId m, i64 size, i64 price) const { return markets_.value_at(m, size, price); }

MarketId Engine::add_market(const MarketSpec& spec) {
  i64 rescale = 1;
  const MarketId m = markets_.add(spec, rescale);
  book_.add_market();
  if (rescale != 1)  // the cached sums are in value units
    for (AccountHot& h : book_.hot()) {
      h.cache.u *= rescale;
      h.cache.mm *= rescale;
      h.cache.im *= rescale;
    }
  return m;
}

const MarketSpec& Engine::market_spec(MarketId m) const { return markets_.market_or_throw(m, "market", 0).spec; }
const std::vector<Tier>& Engine::market_tiers(MarketId m) const {
  return markets_.market_or_throw(m, "market", 0).tiers;
}
i64 Engine::mark(MarketId m) const { return markets_.market_or_throw(m, "market", 0).mark; }

i128 Engine::net_size(MarketId m) const {
  markets_.market_or_throw(m, "market", 0);
  i128 net = 0;
  for (std::uint32_t a : book_.holders(m)) net += book_.sizes()[find_slot(a, m)];
  return net;
}

// The insurance fund's entry points (the fund itself: insurance.cpp).

int Engine::give_market_own_pool(MarketId m) {
  MarketState& mk = markets_.market_or_throw(m, "market", 0);
  if (mk.pool != 0) return mk.pool;
  mk.pool = insurance_.add_pool();
  return mk.pool;
}

int Engine::market_pool(MarketId m) const { return markets_.market_or_throw(m, "market", 0).pool; }

i64 Engine::previous_mark(MarketId m) const { return markets_.market_or_throw(m, "market", 0).previous_mark; }

void Engine::insurance_deposit(i64 amount, int pool) {
  if (amount < 0)
    throw InvalidInput("amount: an insurance deposit must not be negative (got " + std::to_string(amount) + ")");
  if (pool < 0 || pool >= insurance_.pool_count())
    throw UnknownId("pool: unknown insurance pool " + std::to_string(pool));
  insurance_.move(step_, pool, -1, 0, amount, LedgerReason::Deposit);
  flows_.insurance_deposits += amount;
}

std::uint32_t Engine::account_index_or_throw(i64 id, const char* field, std::size_t row) const {
  std::uint32_t a = book_.find(id);
  if (a == AccountIndex::kNone)
    throw UnknownId(std::string(field) + "[" + std::to_string(row) + "]: unknown account id " + std::to_string(id));
  return a;
}

i64 Engine::balance(i64 account_id) const {
  return book_.hot()[account_index_or_throw(account_id, "account", 0)].balance;
}

void Engine::set_position_at(std::uint32_t a, MarketId m, std::uint32_t slot, i64 size, i64 entry) {
  note_changed(a);
  MarketState& mk = markets_[static_cast<std::size_t>(m)];
  std::uint32_t s = slot;
  Sums& cache = book_.hot()[a].cache;
  if (s != kNoSlot) {
    const Contribution old = contribution(mk, book_.sizes()[s], book_.entries()[s], mk.valued_mark);
    cache.u -= old.u;
    cache.mm -= old.mm;
    cache.im -= old.im;
  }
  if (size == 0) {
    if (s == kNoSlot) return;
    book_.remove_position(a, m, s);
    return;
  }
  if (s == kNoSlot) s = book_.add_position(a, m);
  book_.sizes()[s] = size;
  book_.entries()[s] = entry;
  const i64 abs_size = size < 0 ? -size : size;
  mk.max_abs_size = std::max(mk.max_abs_size, abs_size);
  const Contribution now = contribution(mk, size, entry, mk.valued_mark);
  cache.u += now.u;
  cache.mm += now.mm;
  cache.im += now.im;
}

std::vector<i64> Engine::balances() const {
  std::vector<i64> out(book_.account_count());
  for (std::size_t a = 0; a < out.size(); ++a) out[a] = book_.hot()[a].balance;
  return out;
}

std::vector<i64> account_balances(const Engine& engine) { return engine.balances(); }

std::size_t Engine::memory_bytes() const { return book_.memory_bytes() + markets_.memory_bytes(); }

}  // namespace deleverage
