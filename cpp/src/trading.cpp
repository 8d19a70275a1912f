// State-changing operations: deposits, withdrawals, bulk position loads, trades, marks.
// Each validates all of its input first, then applies; the few checks that depend on the
// running state (sequential trades, withdrawals) are undone on failure.
#include <algorithm>
#include <limits>

#include "deleverage/detail/parallel.hpp"
#include "deleverage/engine.hpp"

namespace deleverage {

namespace {
void check_lengths(std::size_t a, std::size_t b, const char* name_a, const char* name_b) {
  if (a != b)
    throw InvalidInput(std::string(name_b) + " has " + std::to_string(b) + " entries but " + name_a + " has " +
                       std::to_string(a));
}
std::string at(const char* field, std::size_t row) { return std::string(field) + "[" + std::to_string(row) + "]"; }

i64 add_checked(i64 a, i64 b, const std::string& what) {
  i64 r;
  if (__builtin_add_overflow(a, b, &r)) throw ArithmeticOverflow(what + " overflows 64 bits");
  return r;
}
}  // namespace

// ---------------------------------------------------------------- deposits / withdrawals

void Engine::deposit(std::span<const i64> accounts, std::span<const i64> amounts) {
  check_lengths(accounts.size(), amounts.size(), "accounts", "amounts");
  for (std::size_t i = 0; i < amounts.size(); ++i)
    if (amounts[i] < 0)
      throw InvalidInput(at("amounts", i) + ": a deposit must not be negative (got " + std::to_string(amounts[i]) +
                         ")");
  const std::size_t accounts_before = book_.ids().size();
  book_.reserve_accounts(accounts.size());
  std::vector<std::pair<std::uint32_t, i64>> applied;
  try {
    for (std::size_t i = 0; i < accounts.size(); ++i) {
      std::uint32_t a = book_.find(accounts[i]);
      if (a == AccountIndex::kNone) a = book_.create_account(accounts[i]);
      book_.hot()[a].balance = add_checked(book_.hot()[a].balance, amounts[i],
                                           at("amounts", i) + ": balance of account " + std::to_string(accounts[i]));
      note_changed(a);
      applied.emplace_back(a, amounts[i]);
      if (!representable(a)) throw_unrepresentable(a, at("amounts", i));
    }
  } catch (...) {
    for (auto it = applied.rbegin(); it != applied.rend(); ++it) book_.hot()[it->first].balance -= it->second;
    book_.truncate_accounts(accounts_before);
    throw;
  }
  for (i64 v : amounts) flows_.deposits += v;
}

void Engine::withdraw(std::span<const i64> accounts, std::span<const i64> amounts) {
  check_lengths(accounts.size(), amounts.size(), "accounts", "amounts");
  std::vector<std::uint32_t> idx(accounts.size());
  for (std::size_t i = 0; i < accounts.size(); ++i) {
    idx[i] = account_index_or_throw(accounts[i], "accounts", i);
    if (amounts[i] < 0)
      throw InvalidInput(at("amounts", i) + ": a withdrawal must not be negative (got " + std::to_string(amounts[i]) +
                         ")");
  }
  detail::UndoLog& undo = book_.undo_log();
  const std::size_t start = undo.mark();
  try {
    for (std::size_t i = 0; i < accounts.size(); ++i) {
      const std::uint32_t a = idx[i];
      add_checked(book_.hot()[a].balance, -amounts[i], at("amounts", i));  // (names the field)
      add_to_balance(a, -amounts[i]);
      note_changed(a);
      const AccountMargin m = account_margin(accounts[i]);
      const bool flat = book_.hot()[a].count == 0;
      if (m.equity < m.initial || (flat && m.equity < 0))
        throw InsufficientMargin(at("amounts", i) + ": withdrawing " + std::to_string(amounts[i]) + " from account " +
                                 std::to_string(accounts[i]) + " would leave equity " + std::to_string(m.equity) +
                                 " below its initial margin " + std::to_string(m.initial));
    }
  } catch (...) {
    roll_back(start);
    throw;
  }
  undo.forget(start);
  for (i64 v : amounts) flows_.withdrawals += v;
}

void Engine::load_balances(std::span<const i64> accounts, std::span<const i64> balances) {
  check_lengths(accounts.size(), balances.size(), "accounts", "balances");
  {
    std::vector<std::pair<i64, std::size_t>> ids(accounts.size());
    for (std::size_t i = 0; i < accounts.size(); ++i) ids[i] = {accounts[i], i};
    std::sort(ids.begin(), ids.end());
    for (std::size_t j = 1; j < ids.size(); ++j)
      if (ids[j].first == ids[j - 1].first)
        throw InvalidInput(at("accounts", ids[j].second) + ": account " + std::to_string(ids[j].first) +
                           " appears twice (also at index " + std::to_string(ids[j - 1].second) + ")");
  }
  const std::size_t accounts_before = book_.ids().size();
  book_.reserve_accounts(accounts.size());
  std::vector<std::pair<std::uint32_t, i64>> applied;  // (account, balance before)
  i128 change = 0;
  try {
    for (std::size_t i = 0; i < accounts.size(); ++i) {
      std::uint32_t a = book_.find(accounts[i]);
      if (a == AccountIndex::kNone) a = book_.create_account(accounts[i]);
      applied.emplace_back(a, book_.hot()[a].balance);
      change += static_cast<i128>(balances[i]) - book_.hot()[a].balance;
      book_.hot()[a].balance = balances[i];
      note_changed(a);
      if (!representable(a)) throw_unrepresentable(a, at("balances", i));
    }
  } catch (...) {
    for (auto it = applied.rbegin(); it != applied.rend(); ++it) book_.hot()[it->first].balance = it->second;
    book_.truncate_accounts(accounts_before);
    throw;
  }
  flows_.loaded_balances += change;
}

// ---------------------------------------------------------------- bulk load

// The rows of a load, validated (in input order: the first bad row is the one reported) and
// grouped by account: a counting sort keeps the input order within an account, then the
// columns are gathered into that order once. A dump in random order makes these reads
// scattered; in one simple loop their cache misses overlap, and every later pass (duplicates,
// the representable range, applying) reads the rows in order.
Engine::LoadRows Engine::load_rows(std::span<const i64> accounts, std::span<const MarketId> markets,
                                   std::span<const i64> sizes, std::span<const i64> entry_prices) const {
  const std::size_t n = accounts.size();
  LoadRows out;
  column<std::uint32_t> idx(n);
  detail::parallel_for(n, threads_, 1 << 16, [&](std::size_t b, std::size_t e) {
    book_.find_many(accounts.data() + b, e - b, idx.data() + b);
  });
  column<i64> entry(n);
  out.net_size.assign(markets_.size(), 0);
  out.net_entry.assign(markets_.size(), 0);
  for (std::size_t i = 0; i < n; ++i) {
    if (idx[i] == AccountIndex::kNone) account_index_or_throw(accounts[i], "accounts", i);  // raises
    const MarketState& mk = markets_.market_or_throw(markets[i], "markets", i);
    if (sizes[i] == 0) throw InvalidInput(at("sizes", i) + ": a position must not have zero size");
    if (sizes[i] == std::numeric_limits<i64>::min()) throw ArithmeticOverflow(at("sizes", i) + ": size out of range");
    if (entry_prices[i] <= 0)
      throw InvalidInput(at("entry_prices", i) + ": price must be positive (got " + std::to_string(entry_prices[i]) +
                         ")");
    if (mk.tick_units != 1 && entry_prices[i] % mk.tick_units != 0)
      markets_.throw_off_tick(mk, entry_prices[i], "entry_prices", i);
    const i64 abs_size = sizes[i] < 0 ? -sizes[i] : sizes[i];
    // (the row labels are built only on the error path: this runs for every row of a dump)
    if (!markets_.value_in_range(mk, abs_size, entry_prices[i])) [[unlikely]]
      markets_.check_value_range(mk, abs_size, entry_prices[i], at("entry_prices", i));
    if (!markets_.value_in_range(mk, abs_size, mk.mark)) [[unlikely]]
      markets_.check_value_range(mk, abs_size, mk.mark, at("sizes", i));
    entry[i] = markets_.value_money(mk, sizes[i], entry_prices[i]);
    out.net_size[static_cast<std::size_t>(markets[i])] += sizes[i];
    out.net_entry[static_cast<std::size_t>(markets[i])] += entry[i];
  }
  const std::size_t n_acc = book_.ids().size();
  out.first.assign(n_acc + 1, 0);
  for (std::size_t i = 0; i < n; ++i) ++out.first[idx[i] + 1];
  for (std::size_t a = 0; a < n_acc; ++a) out.first[a + 1] += out.first[a];
  out.input_row.resize(n);
  {
    std::vector<std::uint32_t> fill(out.first.begin(), out.first.end() - 1);
    for (std::size_t i = 0; i < n; ++i) out.input_row[fill[idx[i]]++] = static_cast<std::uint32_t>(i);
  }
  column<std::uint32_t>().swap(idx);
  out.market.resize(n);
  out.size.resize(n);
  out.entry.resize(n);
  detail::parallel_for(n, threads_, 1 << 16, [&](std::size_t b, std::size_t e) {
    for (std::size_t r = b; r < e; ++r) {
      const std::uint32_t i = out.input_row[r];
      out.market[r] = markets[i];
      out.size[r] = sizes[i];
      out.entry[r] = entry[i];
    }
  });
  return out;
}

// An (account, market) pair twice in the rows, or already held, is refused naming the later row.
void Engine::require_new_pairs(const LoadRows& rows, std::span<const i64> accounts,
                               std::span<const MarketId> markets) const {
  std::vector<std::uint32_t> stamp(markets_.size(), AccountIndex::kNone);
  for (std::size_t a = 0; a + 1 < rows.first.size(); ++a) {
    if (rows.first[a] == rows.first[a + 1]) continue;
    for (std::uint32_t p = book_.hot()[a].start; p < book_.hot()[a].start + book_.hot()[a].count; ++p)
      stamp[static_cast<std::size_t>(book_.markets()[p])] = static_cast<std::uint32_t>(a);
    for (std::uint32_t r = rows.first[a]; r < rows.first[a + 1]; ++r) {
      auto& s = stamp[static_cast<std::size_t>(rows.market[r])];
      if (s == a) {
        const std::uint32_t i = rows.input_row[r];
        throw InvalidInput(
            at("markets", i) + ": account " + std::to_string(accounts[i]) + " already has a position in market '" +
            markets_[static_cast<std::size_t>(markets[i])].spec.symbol + "' (duplicate row or existing position)");
      }
      s = static_cast<std::uint32_t>(a);
    }
  }
}

void Engine::load_positions(std::span<const i64> accounts, std::span<const MarketId> markets,
                            std::span<const i64> sizes, std::span<const i64> entry_prices,
                            std::optional<i64> counterparty) {
  const std::size_t n = accounts.size();
  check_lengths(n, markets.size(), "accounts", "markets");
  check_lengths(n, sizes.size(), "accounts", "sizes");
  check_lengths(n, entry_prices.size(), "accounts", "entry_prices");
  if (book_.live_positions() + n >= kNoSlot) throw InvalidInput("too many positions (2^32)");
  const LoadRows rows = load_rows(accounts, markets, sizes, entry_prices);
  require_new_pairs(rows, accounts, markets);
  const std::size_t n_acc = book_.ids().size();
  const std::vector<std::uint32_t>& first = rows.first;
  const std::vector<i128>& net_size = rows.net_size;
  const std::vector<i128>& net_entry = rows.net_entry;
  // balance per market, or the counterparty's adjustment
  std::uint32_t cp = AccountIndex::kNone;
  std::vector<std::pair<MarketId, std::pair<i64, i64>>> cp_positions;  // new (size, entry) per market
  for (std::size_t m = 0; m < markets_.size(); ++m) {
    if (net_size[m] == 0) continue;
    if (!counterparty)
      throw InvalidInput("the book is not balanced: positions in market '" + markets_[m].spec.symbol + "' (id " +
                         std::to_string(m) + ") net to " + to_string_i128(net_size[m]) +
                         " lots; pass counterparty= to name the account that takes the other side");
    if (cp == AccountIndex::kNone) cp = account_index_or_throw(*counterparty, "counterparty", 0);
    const MarketState& mk = markets_[m];
    std::uint32_t slot = find_slot(cp, static_cast<MarketId>(m));
    i128 q = -net_size[m], e = -net_entry[m];
    for (std::uint32_t r = first[cp]; r < first[cp + 1]; ++r)  // the counterparty's own rows in this market
      if (static_cast<std::size_t>(rows.market[r]) == m) {
        q += rows.size[r];
        e += rows.entry[r];
      }
    if (slot != kNoSlot) {
      q += book_.sizes()[slot];
      e += book_.entries()[slot];
    }
    if (!fits_i64(q) || q == std::numeric_limits<i64>::min() || e > kMaxNotional || e < -kMaxNotional)
      throw ArithmeticOverflow("counterparty position in market '" + mk.spec.symbol + "' overflows 64 bits");
    const i64 q64 = static_cast<i64>(q);
    markets_.check_value_range(mk, q64 < 0 ? -q64 : q64, mk.mark, "counterparty");
    cp_positions.push_back({static_cast<MarketId>(m), {q64, static_cast<i64>(e)}});
  }

  require_loaded_representable(rows, cp, cp_positions);

  // apply: grow each touched account's block once, then append its rows
  std::uint32_t cp_slots = 0;
  {
    std::size_t new_slots = 0;
    std::vector<std::size_t> per_market(markets_.size(), 0);
    for (std::size_t a = 0; a < n_acc; ++a) {
      const std::uint32_t k = first[a + 1] - first[a];
      if (k == 0 || book_.hot()[a].count + k <= book_.capacity(static_cast<std::uint32_t>(a))) continue;
      new_slots += std::size_t{book_.hot()[a].count} + k;
    }
    for (std::size_t r = 0; r < n; ++r) ++per_market[static_cast<std::size_t>(rows.market[r])];
    if (cp != AccountIndex::kNone) {  // the counterparty's block is moved once, at its final size
      cp_slots = book_.hot()[cp].count + (first[cp + 1] - first[cp]) + static_cast<std::uint32_t>(cp_positions.size());
      new_slots += cp_slots;
      for (const auto& [m, qe] : cp_positions) ++per_market[static_cast<std::size_t>(m)];
    }
    book_.reserve_positions(new_slots);
    for (std::size_t m = 0; m < markets_.size(); ++m) {
      book_.reserve_holders(static_cast<MarketId>(m), per_market[m]);
    }
  }
  for (std::size_t a = 0; a < n_acc; ++a) {
    const std::uint32_t k = first[a + 1] - first[a];
    if (k == 0) continue;
    book_.ensure_capacity(static_cast<std::uint32_t>(a), k, true);
    for (std::uint32_t r = first[a]; r < first[a + 1]; ++r)
      set_position(static_cast<std::uint32_t>(a), rows.market[r], rows.size[r], rows.entry[r]);
  }
  if (cp != AccountIndex::kNone) book_.ensure_capacity(cp, cp_slots - book_.hot()[cp].count, true);
  for (const auto& [m, qe] : cp_positions) {
    // The counterparty's position becomes (q, e); a flat result realizes its entry notional.
    if (qe.first == 0) {
      book_.hot()[cp].balance -= qe.second;  // keeps cash = balance - sum(E) unchanged
      set_position(cp, m, 0, 0);
    } else {
      set_position(cp, m, qe.first, qe.second);
    }
  }
  for (std::size_t m = 0; m < markets_.size(); ++m) flows_.loaded_entry_notional += net_entry[m];
  // the counterparty's adjustment is -net_entry per unbalanced market: it cancels the rows' net
  for (std::size_t m = 0; m < markets_.size(); ++m)
    if (net_size[m] != 0) flows_.loaded_entry_notional -= net_entry[m];
  book_.compact_if_wasteful();
}

// Before a load changes anything: every account it touches, with its new rows (and the
// counterparty with its adjusted positions), stays in the representable range.
void Engine::require_loaded_representable(
    const LoadRows& rows, std::uint32_t cp,
    const std::vector<std::pair<MarketId, std::pair<i64, i64>>>& cp_positions) const {
  auto add = [](Sums& s, const Contribution& c, int sign) {
    s.u += sign * c.u;
    s.mm += sign * c.mm;
    s.im += sign * c.im;
  };
  auto adjusted = [&](MarketId m) {
    for (const auto& [cm, qe] : cp_positions)
      if (cm == m) return true;
    return false;
  };
  const std::vector<std::uint32_t>& first = rows.first;
  for (std::size_t a = 0; a + 1 < first.size(); ++a) {
    const bool is_cp = a == cp;
    if (first[a] == first[a + 1] && !is_cp) continue;
    Sums s = account_sums(static_cast<std::uint32_t>(a), false);
    i128 balance = book_.hot()[a].balance;
    for (std::uint32_t r = first[a]; r < first[a + 1]; ++r) {
      if (is_cp && adjusted(rows.market[r])) continue;  // part of the adjusted position below
      const MarketState& mk = markets_[static_cast<std::size_t>(rows.market[r])];
      add(s, contribution(mk, rows.size[r], rows.entry[r], mk.mark), 1);
    }
    if (is_cp) {
      for (const auto& [m, qe] : cp_positions) {
        const MarketState& mk = markets_[static_cast<std::size_t>(m)];
        const std::uint32_t slot = find_slot(cp, m);
        if (slot != kNoSlot) add(s, contribution(mk, book_.sizes()[slot], book_.entries()[slot], mk.mark), -1);
        if (qe.first != 0)
          add(s, contribution(mk, qe.first, qe.second, mk.mark), 1);
        else
          balance -= qe.second;  // a flat result realizes the entry notional
      }
    }
    if (!sums_fit(balance, s))
      throw_unrepresentable(static_cast<std::uint32_t>(a), first[a] == first[a + 1]
                                                               ? std::string("counterparty")
                                                               : at("accounts", rows.input_row[first[a]]));
    note_in_range(balance, s);  // if the load is refused later, the bounds are only looser
  }
}

// ---------------------------------------------------------------- trades

void Engine::apply_fill(std::uint32_t a, MarketId m, i64 dq, i64 sv) {
  const std::uint32_t s = find_slot(a, m);
  const i64 q0 = s == kNoSlot ? 0 : book_.sizes()[s];
  const i64 e0 = s == kNoSlot ? 0 : book_.entries()[s];
  i64 q1;
  if (__builtin_add_overflow(q0, dq, &q1) || q1 == std::numeric_limits<i64>::min())
    throw ArithmeticOverflow("position size of account " + std::to_string(book_.ids()[a]) + " overflows 64 bits");
  const MarketState& mk = markets_[static_cast<std::size_t>(m)];
  // (messages are built only on the error path: this runs for every fill of a cascade)
  if (!markets_.value_in_range(mk, q1 < 0 ? -q1 : q1, mk.mark)) [[unlikely]]
    markets_.check_value_range(mk, q1 < 0 ? -q1 : q1, mk.mark, "position of account " + std::to_string(book_.ids()[a]));
  i64 e1;
  if (q0 == 0 || (q0 > 0) == (dq > 0)) {
    if (__builtin_add_overflow(e0, sv, &e1)) [[unlikely]]
      throw ArithmeticOverflow("entry notional of account " + std::to_string(book_.ids()[a]) + " overflows 64 bits");
  } else if ((dq < 0 ? -static_cast<i128>(dq) : dq) <= (q0 < 0 ? -static_cast<i128>(q0) : q0)) {
    // |result| <= |e0|; the product mostly fits 64 bits, where the division is a single instruction
    i64 product;
    e1 = __builtin_mul_overflow(e0, q1, &product) ? static_cast<i64>(static_cast<i128>(e0) * q1 / q0) : product / q0;
  } else {
    e1 = static_cast<i64>(static_cast<i128>(sv) * q1 / dq);  // |result| <= |sv|
  }
  if (e1 > kMaxNotional || e1 < -kMaxNotional)
    throw ArithmeticOverflow("entry notional of account " + std::to_string(book_.ids()[a]) +
                             " would exceed 2^62 money units");
  const i128 balance = static_cast<i128>(book_.hot()[a].balance) + (static_cast<i128>(e1) - e0) - sv;
  if (!fits_i64(balance)) [[unlikely]]
    throw ArithmeticOverflow("balance of account " + std::to_string(book_.ids()[a]) + " overflows 64 bits");
  const i64 b1 = static_cast<i64>(balance);
  // (logged once every check passed: a fill that throws changed nothing)
  book_.undo_log().save_position(a, m, q0, e0, book_.hot()[a].balance);
  set_position_at(a, m, s, q1, e1);
  book_.hot()[a].balance = b1;
}

void Engine::throw_balance_overflow(std::uint32_t a) const {
  throw ArithmeticOverflow("balance of account " + std::to_string(book_.ids()[a]) + " overflows 64 bits");
}

void Engine::roll_back(std::size_t mark) {
  detail::UndoLog& undo = book_.undo_log();
  for (std::size_t i = undo.mark(); i > mark;) {
    const detail::UndoLog::Entry& it = undo.at(--i);
    if (it.market != detail::UndoLog::kBalanceOnly) set_position(it.account, it.market, it.size, it.entry);
    book_.hot()[it.account].balance = it.balance;
  }
  undo.forget(mark);
}

void Engine::validate_trade(i64 buyer, i64 seller, MarketId m, i64 size, i64 price, std::size_t row, std::uint32_t* ab,
                            std::uint32_t* as) const {
  *ab = account_index_or_throw(buyer, "buyers", row);
  *as = account_index_or_throw(seller, "sellers", row);
  if (buyer == seller)
    throw InvalidInput(at("sellers", row) + ": buyer and seller are the same account " + std::to_string(buyer));
  const MarketState& mk = markets_.market_or_throw(m, "markets", row);
  if (size <= 0)
    throw InvalidInput(at("sizes", row) + ": trade size must be positive (got " + std::to_string(size) + ")");
  if (price <= 0)
    throw InvalidInput(at("prices", row) + ": price must be positive (got " + std::to_string(price) + ")");
  if (mk.tick_units != 1 && price % mk.tick_units != 0) markets_.throw_off_tick(mk, price, "prices", row);
  // (the message is built only on the error path: trade() must not allocate)
  if (!markets_.value_in_range(mk, size, price)) [[unlikely]]
    markets_.check_value_range(mk, size, price, at("prices", row));
}

void Engine::prefetch_pair(std::uint32_t a, std::uint32_t b) const {
  prefetch_account(a);
  prefetch_account(b);
  for (const std::uint32_t x : {a, b}) {
    if (book_.hot()[x].count == 0) continue;  // no block (it may start at the end of the columns)
    prefetch_block(x);
    __builtin_prefetch(book_.entries().data() + book_.hot()[x].start);
  }
}

// Applies both sides of one fill that validate_trade accepted; on failure both are rolled
// back. No heap allocation unless a position is opened in a full block or market list.
void Engine::apply_trade(std::uint32_t ab, std::uint32_t as, MarketId m, i64 size, i64 value) {
  detail::UndoLog& undo = book_.undo_log();
  const std::size_t start = undo.mark();
  try {
    apply_fill(ab, m, size, value);
    apply_fill(as, m, -size, -value);
    const bool buyer_fits = representable(ab);
    if (!buyer_fits || !representable(as)) [[unlikely]]
      throw_unrepresentable(buyer_fits ? as : ab, "trade");
  } catch (...) {
    roll_back(start);
    throw;
  }
  undo.forget(start);
}

void Engine::trade(i64 buyer, i64 seller, MarketId market, i64 size, i64 price) {
  // The single-fill path of trades(), without its per-call vectors: this is a hot path.
  // On a large book each account costs a few cache misses (index slot, id, hot fields,
  // position block); the prefetches let the two accounts' misses overlap.
  book_.prefetch_id(buyer);
  book_.prefetch_id(seller);
  std::uint32_t ab, as;
  validate_trade(buyer, seller, market, size, price, 0, &ab, &as);
  prefetch_pair(ab, as);
  apply_trade(ab, as, market, size, markets_.value_money(markets_[static_cast<std::size_t>(market)], size, price));
  book_.compact_if_wasteful();
}

void Engine::adl_fill(i64 bankrupt, i64 winner, MarketId market, i64 lots, i64 price) {
  book_.prefetch_id(bankrupt);
  book_.prefetch_id(winner);
  const std::uint32_t a = account_index_or_throw(bankrupt, "bankrupt", 0);
  const std::uint32_t b = account_index_or_throw(winner, "winner", 0);
  prefetch_pair(a, b);
  if (a == b)
    throw InvalidInput("winner: the winner must differ from the bankrupt account " + std::to_string(bankrupt));
  const MarketState& mk = markets_.market_or_throw(market, "market", 0);
  if (lots <= 0)
    throw InvalidInput("lots: an ADL fill must close a positive number of lots (got " + std::to_string(lots) + ")");
  if (price <= 0) throw InvalidInput("price: price must be positive (got " + std::to_string(price) + ")");
  const std::uint32_t sa = find_slot(a, market), sb = find_slot(b, market);
  if (sa == kNoSlot)
    throw InvalidInput("bankrupt: account " + std::to_string(bankrupt) + " has no position in market '" +
                       mk.spec.symbol + "'");
  if (sb == kNoSlot)
    throw InvalidInput("winner: account " + std::to_string(winner) + " has no position in market '" + mk.spec.symbol +
                       "'");
  const i64 qa = book_.sizes()[sa], qb = book_.sizes()[sb];
  if ((qa > 0) == (qb > 0))
    throw InvalidInput("winner: account " + std::to_string(winner) +
                       " is on the same side as the bankrupt account in market '" + mk.spec.symbol + "'");
  // |q| of a stored position is < 2^63 (sizes never hold INT64_MIN)
  if (lots > (qa < 0 ? -qa : qa) || lots > (qb < 0 ? -qb : qb))
    throw InvalidInput("lots: " + std::to_string(lots) + " lots exceed the bankrupt position (" + std::to_string(qa) +
                       ") or the winner's (" + std::to_string(qb) + "): an ADL fill only reduces both");
  if (!markets_.value_in_range(mk, lots, price)) [[unlikely]]
    markets_.check_value_range(mk, lots, price, "price");
  // The bankrupt side is credited the floor and charged the ceiling (rounding favours solvency).
  const i128 v = markets_.value_v(mk, lots, price);
  if (qa > 0) {  // the bankrupt long sells to the short winner
    apply_trade(b, a, market, lots, static_cast<i64>(markets_.div_s().floor(v)));
  } else {  // the bankrupt short buys from the long winner
    apply_trade(a, b, market, lots, static_cast<i64>(markets_.div_s().ceil(v)));
  }
  book_.compact_if_wasteful();
}

void Engine::trades(std::span<const i64> buyers, std::span<const i64> sellers, std::span<const MarketId> markets,
                    std::span<const i64> sizes, std::span<const i64> prices) {
  const std::size_t n = buyers.size();
  check_lengths(n, sellers.size(), "buyers", "sellers");
  check_lengths(n, markets.size(), "buyers", "markets");
  check_lengths(n, sizes.size(), "buyers", "sizes");
  check_lengths(n, prices.size(), "buyers", "prices");
  std::vector<std::uint32_t> ab(n), as(n);
  for (std::size_t i = 0; i < n; ++i)
    validate_trade(buyers[i], sellers[i], markets[i], sizes[i], prices[i], i, &ab[i], &as[i]);
  detail::UndoLog& undo = book_.undo_log();
  const std::size_t start = undo.mark();
  try {
    for (std::size_t i = 0; i < n; ++i) {
      const i64 v = markets_.value_money(markets_[static_cast<std::size_t>(markets[i])], sizes[i], prices[i]);
      apply_fill(ab[i], markets[i], sizes[i], v);
      apply_fill(as[i], markets[i], -sizes[i], -v);
      if (!representable(ab[i])) throw_unrepresentable(ab[i], at("sizes", i));
      if (!representable(as[i])) throw_unrepresentable(as[i], at("sizes", i));
    }
  } catch (...) {
    roll_back(start);
    throw;
  }
  undo.forget(start);
  book_.compact_if_wasteful();
}

// ---------------------------------------------------------------- marks

void Engine::set_marks(std::span<const MarketId> markets, std::span<const i64> prices) {
  check_lengths(markets.size(), prices.size(), "markets", "prices");
  std::vector<std::uint8_t> seen(markets_.size(), 0);
  for (std::size_t i = 0; i < markets.size(); ++i) {
    const MarketState& mk = markets_.market_or_throw(markets[i], "markets", i);
    if (seen[static_cast<std::size_t>(markets[i])]++)
      throw InvalidInput(at("markets", i) + ": market id " + std::to_string(markets[i]) + " appears twice");
    if (prices[i] <= 0)
      throw InvalidInput(at("prices", i) + ": price must be positive (got " + std::to_string(prices[i]) + ")");
    try {
      markets_.check_value_range(mk, mk.max_abs_size, prices[i], at("prices", i));
    } catch (const ArithmeticOverflow&) {
      // max_abs_size only grows between recomputations: recompute it exactly and retry
      MarketState& mutable_mk = markets_[static_cast<std::size_t>(markets[i])];
      i64 largest = 0;
      for (std::uint32_t a : book_.holders(markets[i])) {
        const i64 q = book_.sizes()[find_slot(a, markets[i])];
        largest = std::max(largest, q < 0 ? -q : q);
      }
      mutable_mk.max_abs_size = largest;  // a tighter bound is not a change of state
      markets_.check_value_range(mk, largest, prices[i], at("prices", i));
    }
  }
  struct Changed {
    std::size_t row;
    i64 mark, previous_mark;
  };
  std::vector<Changed> changed;
  for (std::size_t i = 0; i < markets.size(); ++i) {
    MarketState& mk = markets_[static_cast<std::size_t>(markets[i])];
    if (mk.mark != prices[i]) {
      changed.push_back(Changed{i, mk.mark, mk.previous_mark});
      mk.previous_mark = mk.mark;
      mk.mark = prices[i];
      ++mk.mark_updates;  // the kept ADL queues' staleness
      ++marks_epoch_;
    }
  }
  // The representable range: every holder of a moved market, at the new marks. While the
  // range bounds show the whole book far inside it (any real book), no holder needs a look.
  if (changed.empty()) return;
  {
    std::vector<std::pair<MarketId, i64>> moved;
    moved.reserve(changed.size());
    for (const Changed& c : changed) moved.emplace_back(markets[c.row], c.mark);
    if (mark_move_within_bounds(moved)) return;
  }
  std::vector<std::uint32_t> holders;
  if (changed.size() == 1) {
    holders = book_.holders(markets[changed[0].row]);
  } else if (changed.size() > 1) {
    std::vector<std::uint8_t> seen(book_.ids().size(), 0);
    for (const Changed& c : changed)
      for (std::uint32_t a : book_.holders(markets[c.row]))
        if (!seen[a]++) holders.push_back(a);
  }
  const std::uint32_t bad = first_unrepresentable(holders);
  if (bad == AccountIndex::kNone) {
    tighten_range_bounds();  // near the limit: exact bounds keep the next moves cheap if they can be
    return;
  }
  for (const Changed& c : changed) {
    MarketState& mk = markets_[static_cast<std::size_t>(markets[c.row])];
    mk.mark = c.mark;
    mk.previous_mark = c.previous_mark;
  }
  throw_unrepresentable(bad, "prices (set_marks)");
}

}  // namespace deleverage
