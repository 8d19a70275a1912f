// The journal writer (apply-and-record) and replay. Byte layout: docs/durability.md.
#include "deleverage/journal.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <limits>

#include "deleverage/detail/serial.hpp"
#include "deleverage/snapshot.hpp"

namespace deleverage {

namespace {
using detail::Reader;
using detail::Writer;

constexpr char kMagic[8] = {'D', 'L', 'V', 'J', 'R', 'N', 'L', '\0'};
// Record head: u32 length and u32 journal_length_check(length); the checksum follows the body.
constexpr std::size_t kRecordHead = 8;
constexpr std::size_t kRecordOverhead = kRecordHead + 8;
constexpr std::size_t kRecordHeadV1 = 4;  // version 1: the length alone
constexpr std::uint32_t kMaxRecordBody = 0x7FFFFFFFu;

[[noreturn]] void bad(const std::string& what) { throw CorruptSnapshot("journal: " + what); }

template <class T>
void put_span(Writer& w, std::span<const T> v) {
  w.put<u64>(v.size());
  w.array(v.data(), v.size());
}
template <class T>
std::vector<T> get_vector(Reader& r) {
  const std::size_t n = r.count<u64>(sizeof(T), std::numeric_limits<std::size_t>::max(), "array length");
  std::vector<T> out(n);
  r.array(out.data(), n);
  return out;
}

void put_config(Writer& w, const WaterfallConfig& c) {
  const std::pair<LiquidateKey, i64> kv[] = {
      {LiquidateKey::ExecutorKind, static_cast<i64>(c.executor.kind)},
      {LiquidateKey::ExecutorAccount, c.executor.account},
      {LiquidateKey::SlippageRate, c.executor.slippage_rate},
      {LiquidateKey::ImpactRate, c.executor.impact_rate},
      {LiquidateKey::ImpactDepth, c.executor.impact_depth},
      {LiquidateKey::Partial, c.executor.partial ? 1 : 0},
      {LiquidateKey::Mode, static_cast<i64>(c.mode)},
      {LiquidateKey::Policy, static_cast<i64>(c.policy)},
      {LiquidateKey::Ranking, static_cast<i64>(c.ranking)},
      {LiquidateKey::AdlPrice, static_cast<i64>(c.adl_price)},
      {LiquidateKey::Theta, c.theta},
      {LiquidateKey::Cap, c.cap},
      {LiquidateKey::Lot, c.lot},
      {LiquidateKey::GKind, static_cast<i64>(c.g.kind)},
      {LiquidateKey::GParam, std::bit_cast<i64>(c.g.param)},
      {LiquidateKey::Seed, std::bit_cast<i64>(c.seed)},
      {LiquidateKey::DeficitSplit, static_cast<i64>(c.deficit_split)},
  };
  w.put<std::uint32_t>(static_cast<std::uint32_t>(std::size(kv)));
  for (const auto& [k, v] : kv) {
    w.put<std::uint16_t>(static_cast<std::uint16_t>(k));
    w.put<i64>(v);
  }
}

template <class E>
E enum_value(i64 v, int count, const char* what) {
  if (v < 0 || v >= count) bad(std::string("liquidate setting ") + what + " has unknown value " + std::to_string(v));
  return static_cast<E>(v);
}

WaterfallConfig get_config(Reader& r) {
  WaterfallConfig c;
  c.deficit_split = DeficitSplit::Maintenance;  // journals without the key were written under this rule
  const std::size_t n = r.count<std::uint32_t>(10, 1024, "liquidate setting count");
  for (std::size_t i = 0; i < n; ++i) {
    const auto key = r.get<std::uint16_t>();
    const i64 v = r.get<i64>();
    switch (static_cast<LiquidateKey>(key)) {
      case LiquidateKey::ExecutorKind:
        c.executor.kind = enum_value<ExecutorKind>(v, 2, "executor kind");
        break;
      case LiquidateKey::ExecutorAccount:
        c.executor.account = v;
        break;
      case LiquidateKey::SlippageRate:
        c.executor.slippage_rate = v;
        break;
      case LiquidateKey::ImpactRate:
        c.executor.impact_rate = v;
        break;
      case LiquidateKey::ImpactDepth:
        c.executor.impact_depth = v;
        break;
      case LiquidateKey::Partial:
        c.executor.partial = enum_value<int>(v, 2, "partial") != 0;
        break;
      case LiquidateKey::Mode:
        c.mode = enum_value<WaterfallMode>(v, 2, "mode");
        break;
      case LiquidateKey::Policy:
        c.policy = enum_value<Policy>(v, kPolicyCount, "policy");
        break;
      case LiquidateKey::Ranking:
        c.ranking = enum_value<Ranking>(v, 3, "ranking");
        break;
      case LiquidateKey::AdlPrice:
        c.adl_price = enum_value<AdlPrice>(v, 3, "adl_price");
        break;
      case LiquidateKey::Theta:
        c.theta = v;
        break;  // range checked by Engine::liquidate on replay
      case LiquidateKey::Cap:
        c.cap = v;
        break;
      case LiquidateKey::Lot:
        c.lot = v;
        break;
      case LiquidateKey::GKind:
        c.g.kind = enum_value<RiskFunction::Kind>(v, 3, "g kind");
        break;
      case LiquidateKey::GParam:
        c.g.param = std::bit_cast<double>(v);
        break;
      case LiquidateKey::Seed:
        c.seed = std::bit_cast<std::uint64_t>(v);
        break;
      case LiquidateKey::DeficitSplit:
        c.deficit_split = enum_value<DeficitSplit>(v, 2, "deficit_split");
        break;
      default:
        bad("unknown liquidate setting key " + std::to_string(key) + " (written by a newer version?)");
    }
  }
  return c;
}

const char* op_name(std::uint8_t op) {
  switch (static_cast<JournalOp>(op)) {
    case JournalOp::AddMarket:
      return "add_market";
    case JournalOp::Deposit:
      return "deposit";
    case JournalOp::Withdraw:
      return "withdraw";
    case JournalOp::LoadPositions:
      return "load_positions";
    case JournalOp::Trade:
      return "trade";
    case JournalOp::Trades:
      return "trades";
    case JournalOp::SetMarks:
      return "set_marks";
    case JournalOp::CheckMarginFull:
      return "check_margin";
    case JournalOp::CheckMarginMoved:
      return "check_margin(moved)";
    case JournalOp::GiveMarketOwnPool:
      return "give_market_own_pool";
    case JournalOp::InsuranceDeposit:
      return "insurance_deposit";
    case JournalOp::SetDrawdownRule:
      return "set_drawdown_rule";
    case JournalOp::Liquidate:
      return "liquidate";
    case JournalOp::AdlRanking:
      return "adl_ranking";
    case JournalOp::AdlFill:
      return "adl_fill";
    case JournalOp::LiquidateAccounts:
      return "liquidate(accounts)";
    case JournalOp::AdlRank:
      return "adl_rank";
    case JournalOp::SetAdlRefresh:
      return "set_adl_refresh";
    case JournalOp::LoadBalances:
      return "load_balances";
  }
  return "unknown";
}

// Decodes one record body and applies it.
void apply_record(Engine& e, std::uint8_t op, Reader& r, std::uint32_t version) {
  switch (static_cast<JournalOp>(op)) {
    case JournalOp::AddMarket: {
      const MarketSpec s = detail::read_market_spec(r, version >= 3);
      if (!r.done()) break;
      e.add_market(s);
      return;
    }
    case JournalOp::Deposit:
    case JournalOp::Withdraw:
    case JournalOp::LoadBalances: {
      const auto a = get_vector<i64>(r);
      const auto v = get_vector<i64>(r);
      if (!r.done()) break;
      if (static_cast<JournalOp>(op) == JournalOp::Deposit)
        e.deposit(a, v);
      else if (static_cast<JournalOp>(op) == JournalOp::Withdraw)
        e.withdraw(a, v);
      else
        e.load_balances(a, v);
      return;
    }
    case JournalOp::LoadPositions: {
      const auto a = get_vector<i64>(r);
      const auto m = get_vector<MarketId>(r);
      const auto q = get_vector<i64>(r);
      const auto p = get_vector<i64>(r);
      const auto has_cp = r.get<std::uint8_t>();
      const i64 cp = r.get<i64>();
      if (!r.done() || has_cp > 1) break;
      e.load_positions(a, m, q, p, has_cp ? std::optional<i64>(cp) : std::nullopt);
      return;
    }
    case JournalOp::Trade: {
      const i64 b = r.get<i64>(), s = r.get<i64>();
      const MarketId m = r.get<MarketId>();
      const i64 q = r.get<i64>(), p = r.get<i64>();
      if (!r.done()) break;
      e.trade(b, s, m, q, p);
      return;
    }
    case JournalOp::AdlFill: {
      const i64 bankrupt = r.get<i64>(), winner = r.get<i64>();
      const MarketId m = r.get<MarketId>();
      const i64 lots = r.get<i64>(), price = r.get<i64>();
      if (!r.done()) break;
      e.adl_fill(bankrupt, winner, m, lots, price);
      return;
    }
    case JournalOp::Trades: {
      const auto b = get_vector<i64>(r);
      const auto s = get_vector<i64>(r);
      const auto m = get_vector<MarketId>(r);
      const auto q = get_vector<i64>(r);
      const auto p = get_vector<i64>(r);
      if (!r.done()) break;
      e.trades(b, s, m, q, p);
      return;
    }
    case JournalOp::SetMarks: {
      const auto m = get_vector<MarketId>(r);
      const auto p = get_vector<i64>(r);
      if (!r.done()) break;
      e.set_marks(m, p);
      return;
    }
    case JournalOp::CheckMarginFull:
      if (!r.done()) break;
      (void)e.check_margin_values();
      return;
    case JournalOp::CheckMarginMoved: {
      const auto m = get_vector<MarketId>(r);
      if (!r.done()) break;
      (void)e.check_margin(m);
      return;
    }
    case JournalOp::GiveMarketOwnPool: {
      const MarketId m = r.get<MarketId>();
      if (!r.done()) break;
      (void)e.give_market_own_pool(m);
      return;
    }
    case JournalOp::InsuranceDeposit: {
      const i64 amount = r.get<i64>();
      const std::int32_t pool = r.get<std::int32_t>();
      if (!r.done()) break;
      e.insurance_deposit(amount, pool);
      return;
    }
    case JournalOp::SetDrawdownRule: {
      const i64 dd = r.get<i64>();
      const std::int32_t window = r.get<std::int32_t>();
      if (!r.done()) break;
      e.set_drawdown_rule(dd, window);
      return;
    }
    case JournalOp::Liquidate: {
      const WaterfallConfig c = get_config(r);
      if (!r.done()) break;
      (void)e.liquidate(c);
      return;
    }
    case JournalOp::LiquidateAccounts: {
      const WaterfallConfig c = get_config(r);
      const auto accounts = get_vector<i64>(r);
      if (!r.done()) break;
      (void)e.liquidate(c, accounts);
      return;
    }
    case JournalOp::AdlRank: {
      const i64 account = r.get<i64>();
      const MarketId m = r.get<MarketId>();
      const auto rk = r.get<std::uint8_t>();
      if (!r.done()) break;
      (void)e.adl_rank(account, m, enum_value<Ranking>(rk, 3, "ranking"));
      return;
    }
    case JournalOp::SetAdlRefresh: {
      const auto policy = r.get<std::uint8_t>();
      const i64 every = r.get<i64>();
      if (!r.done()) break;
      e.set_adl_refresh(enum_value<AdlRefresh>(policy, 2, "adl_refresh"), every);
      return;
    }
    case JournalOp::AdlRanking: {
      const MarketId m = r.get<MarketId>();
      const auto rk = r.get<std::uint8_t>();
      if (!r.done()) break;
      (void)e.adl_ranking(m, enum_value<Ranking>(rk, 3, "ranking"));
      return;
    }
    default:
      bad("unknown record op " + std::to_string(op));
  }
  bad(std::string("malformed ") + op_name(op) + " record (" + std::to_string(r.remaining()) + " unexpected bytes)");
}
}  // namespace

// ------------------------------------------------------------------ writer

// A bijection of the 32-bit length (murmur3's finalizer after a constant): any damage
// confined to the length or to its check changes one without the other, so it is always
// told apart from a cut-off tail.
std::uint32_t journal_length_check(std::uint32_t n) {
  std::uint32_t h = n ^ 0x6A09E667u;
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

Journal::Journal(const std::string& path, const Engine& base) : path_(path) {
  const StateHash h = base.state_hash();
  std::byte header[kJournalHeaderBytes];
  std::memcpy(header, kMagic, 8);
  detail::store_le<std::uint32_t>(header + 8, kJournalVersion);
  detail::store_le<std::uint32_t>(header + 12, 0);
  detail::store_le<u64>(header + 16, h.lo);
  detail::store_le<u64>(header + 24, h.hi);
  detail::store_le<u64>(header + 32, checksum64(header, 32, 3));
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot create journal '" + path + "': " + std::strerror(errno));
  std::size_t done = 0;
  while (done < sizeof(header)) {
    const ssize_t w = ::write(fd_, header + done, sizeof(header) - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const std::string msg = std::strerror(errno);
      ::close(fd_);
      fd_ = -1;
      throw Error("cannot write journal '" + path + "': " + msg);
    }
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd_) != 0) {
    const std::string msg = std::strerror(errno);
    ::close(fd_);
    fd_ = -1;
    throw Error("cannot fsync journal '" + path + "': " + msg);
  }
}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
}

void Journal::close() {
  if (fd_ < 0) return;
  const int fd = fd_;
  fd_ = -1;
  const bool synced = ::fsync(fd) == 0;
  const std::string msg = synced ? "" : std::strerror(errno);
  ::close(fd);
  if (!synced) throw Error("cannot fsync journal '" + path_ + "': " + msg);
}

void Journal::sync() {
  if (fd_ >= 0 && ::fsync(fd_) != 0) throw Error("cannot fsync journal '" + path_ + "': " + std::strerror(errno));
}

void Journal::append(JournalOp op, std::span<const std::byte> body_payload) {
  if (fd_ < 0) throw Error("the journal '" + path_ + "' is closed");
  if (broken_) throw Error("the journal '" + path_ + "' failed earlier and is incomplete");
  const std::size_t body = 1 + body_payload.size();
  if (body > kMaxRecordBody) {
    broken_ = true;
    throw Error("journal record too large; the journal '" + path_ + "' is now incomplete");
  }
  std::vector<std::byte> rec(kRecordOverhead + body);
  detail::store_le<std::uint32_t>(rec.data(), static_cast<std::uint32_t>(body));
  detail::store_le<std::uint32_t>(rec.data() + 4, journal_length_check(static_cast<std::uint32_t>(body)));
  rec[kRecordHead] = static_cast<std::byte>(op);
  if (!body_payload.empty()) std::memcpy(rec.data() + kRecordHead + 1, body_payload.data(), body_payload.size());
  detail::store_le<u64>(rec.data() + kRecordHead + body, checksum64(rec.data(), kRecordHead + body, 4));
  std::size_t done = 0;
  while (done < rec.size()) {
    const ssize_t w = ::write(fd_, rec.data() + done, rec.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      broken_ = true;
      throw Error("cannot write journal '" + path_ + "': " + std::strerror(errno) +
                  " (the state changed; the journal is now incomplete)");
    }
    done += static_cast<std::size_t>(w);
  }
  ++records_;
}

namespace {
// Collects a record's payload (the engine call has already succeeded).
struct Payload {
  Writer w;
  column<std::byte> bytes() { return w.take(); }
};
}  // namespace

MarketId Journal::add_market(Engine& e, const MarketSpec& spec) {
  const MarketId id = e.add_market(spec);
  Payload p;
  detail::write_market_spec(p.w, spec);
  append(JournalOp::AddMarket, p.bytes());
  return id;
}

void Journal::deposit(Engine& e, std::span<const i64> accounts, std::span<const i64> amounts) {
  e.deposit(accounts, amounts);
  Payload p;
  put_span(p.w, accounts);
  put_span(p.w, amounts);
  append(JournalOp::Deposit, p.bytes());
}

void Journal::load_balances(Engine& e, std::span<const i64> accounts, std::span<const i64> balances) {
  e.load_balances(accounts, balances);
  Payload p;
  put_span(p.w, accounts);
  put_span(p.w, balances);
  append(JournalOp::LoadBalances, p.bytes());
}

void Journal::withdraw(Engine& e, std::span<const i64> accounts, std::span<const i64> amounts) {
  e.withdraw(accounts, amounts);
  Payload p;
  put_span(p.w, accounts);
  put_span(p.w, amounts);
  append(JournalOp::Withdraw, p.bytes());
}

void Journal::load_positions(Engine& e, std::span<const i64> accounts, std::span<const MarketId> markets,
                             std::span<const i64> sizes, std::span<const i64> entry_prices,
                             std::optional<i64> counterparty) {
  e.load_positions(accounts, markets, sizes, entry_prices, counterparty);
  Payload p;
  put_span(p.w, accounts);
  put_span(p.w, markets);
  put_span(p.w, sizes);
  put_span(p.w, entry_prices);
  p.w.put<std::uint8_t>(counterparty ? 1 : 0);
  p.w.put<i64>(counterparty.value_or(0));
  append(JournalOp::LoadPositions, p.bytes());
}

void Journal::adl_fill(Engine& e, i64 bankrupt, i64 winner, MarketId market, i64 lots, i64 price) {
  e.adl_fill(bankrupt, winner, market, lots, price);
  Payload p;
  p.w.put<i64>(bankrupt);
  p.w.put<i64>(winner);
  p.w.put<MarketId>(market);
  p.w.put<i64>(lots);
  p.w.put<i64>(price);
  append(JournalOp::AdlFill, p.bytes());
}

void Journal::trade(Engine& e, i64 buyer, i64 seller, MarketId market, i64 size, i64 price) {
  e.trade(buyer, seller, market, size, price);
  Payload p;
  p.w.put<i64>(buyer);
  p.w.put<i64>(seller);
  p.w.put<MarketId>(market);
  p.w.put<i64>(size);
  p.w.put<i64>(price);
  append(JournalOp::Trade, p.bytes());
}

void Journal::trades(Engine& e, std::span<const i64> buyers, std::span<const i64> sellers,
                     std::span<const MarketId> markets, std::span<const i64> sizes, std::span<const i64> prices) {
  e.trades(buyers, sellers, markets, sizes, prices);
  Payload p;
  put_span(p.w, buyers);
  put_span(p.w, sellers);
  put_span(p.w, markets);
  put_span(p.w, sizes);
  put_span(p.w, prices);
  append(JournalOp::Trades, p.bytes());
}

void Journal::set_marks(Engine& e, std::span<const MarketId> markets, std::span<const i64> prices) {
  e.set_marks(markets, prices);
  Payload p;
  put_span(p.w, markets);
  put_span(p.w, prices);
  append(JournalOp::SetMarks, p.bytes());
}

MarginReport Journal::check_margin(Engine& e) {
  MarginReport r = e.check_margin();
  append(JournalOp::CheckMarginFull, {});
  return r;
}

MarginReport Journal::check_margin_values(Engine& e) {
  MarginReport r = e.check_margin_values();
  append(JournalOp::CheckMarginFull, {});
  return r;
}

void Journal::check_margin_into(Engine& e, const MarginColumns& out) {
  e.check_margin_into(out);
  append(JournalOp::CheckMarginFull, {});
}

MarginReport Journal::check_margin(Engine& e, std::span<const MarketId> moved) {
  MarginReport r = e.check_margin(moved);
  Payload p;
  put_span(p.w, moved);
  append(JournalOp::CheckMarginMoved, p.bytes());
  return r;
}

int Journal::give_market_own_pool(Engine& e, MarketId m) {
  const int pool = e.give_market_own_pool(m);
  Payload p;
  p.w.put<MarketId>(m);
  append(JournalOp::GiveMarketOwnPool, p.bytes());
  return pool;
}

void Journal::insurance_deposit(Engine& e, i64 amount, int pool) {
  e.insurance_deposit(amount, pool);
  Payload p;
  p.w.put<i64>(amount);
  p.w.put<std::int32_t>(pool);
  append(JournalOp::InsuranceDeposit, p.bytes());
}

void Journal::set_drawdown_rule(Engine& e, i64 max_drawdown, int window) {
  e.set_drawdown_rule(max_drawdown, window);
  Payload p;
  p.w.put<i64>(max_drawdown);
  p.w.put<std::int32_t>(window);
  append(JournalOp::SetDrawdownRule, p.bytes());
}

WaterfallResult Journal::liquidate(Engine& e, const WaterfallConfig& config) {
  WaterfallResult r = e.liquidate(config);
  Payload p;
  put_config(p.w, config);
  append(JournalOp::Liquidate, p.bytes());
  return r;
}

WaterfallResult Journal::liquidate(Engine& e, const WaterfallConfig& config, std::span<const i64> accounts) {
  WaterfallResult r = e.liquidate(config, accounts);
  Payload p;
  put_config(p.w, config);
  put_span(p.w, accounts);
  append(JournalOp::LiquidateAccounts, p.bytes());
  return r;
}

AdlRank Journal::adl_rank(Engine& e, i64 account, MarketId m, Ranking ranking) {
  const AdlRank r = e.adl_rank(account, m, ranking);
  Payload p;
  p.w.put<i64>(account);
  p.w.put<MarketId>(m);
  p.w.put<std::uint8_t>(static_cast<std::uint8_t>(ranking));
  append(JournalOp::AdlRank, p.bytes());
  return r;
}

void Journal::set_adl_refresh(Engine& e, AdlRefresh policy, i64 every) {
  e.set_adl_refresh(policy, every);
  Payload p;
  p.w.put<std::uint8_t>(static_cast<std::uint8_t>(policy));
  p.w.put<i64>(every);
  append(JournalOp::SetAdlRefresh, p.bytes());
}

AdlRankingReport Journal::adl_ranking(Engine& e, MarketId m, Ranking ranking, DeficitSplit split) {
  AdlRankingReport r = e.adl_ranking(m, ranking, split);
  Payload p;
  p.w.put<MarketId>(m);
  p.w.put<std::uint8_t>(static_cast<std::uint8_t>(ranking));
  append(JournalOp::AdlRanking, p.bytes());
  return r;
}

// ------------------------------------------------------------------ replay

JournalReplay replay_journal(Engine& engine, std::span<const std::byte> journal) {
  JournalReplay out;
  out.total_bytes = journal.size();
  if (journal.empty()) bad("empty input (0 bytes)");
  if (journal.size() < 8 || std::memcmp(journal.data(), kMagic, 8) != 0) bad("not a deleverage journal (bad magic)");
  if (journal.size() < kJournalHeaderBytes) bad("truncated header");
  const std::byte* h = journal.data();
  if (detail::load_le<u64>(h + 32) != checksum64(h, 32, 3)) bad("header checksum mismatch");
  const std::uint32_t version = detail::load_le<std::uint32_t>(h + 8);
  if (version == 0) bad("format version 0");
  if (version > kJournalVersion)
    bad("format version " + std::to_string(version) + " is newer than this build reads (" +
        std::to_string(kJournalVersion) + ")");
  if (detail::load_le<std::uint32_t>(h + 12) != 0) bad("unknown flags");
  const StateHash base{detail::load_le<u64>(h + 16), detail::load_le<u64>(h + 24)};
  if (!(engine.state_hash() == base))
    bad("the journal does not start from this state (state hash differs from the journal's base)");
  const std::size_t head = version >= 2 ? kRecordHead : kRecordHeadV1;
  std::size_t at = kJournalHeaderBytes;
  out.valid_bytes = at;
  while (at < journal.size()) {
    const std::size_t left = journal.size() - at;
    auto where = [&] { return "record " + std::to_string(out.records) + " at byte " + std::to_string(at); };
    if (left < head) {
      out.truncated = true;
      break;
    }  // cut inside the record's head
    const std::uint32_t body = detail::load_le<std::uint32_t>(h + at);
    // A damaged length is refused here, wherever the record is; only a whole, checked head
    // whose record runs past the end reads as a cut-off tail.
    if (head == kRecordHead && detail::load_le<std::uint32_t>(h + at + 4) != journal_length_check(body))
      bad(where() + ": damaged length field");
    if (body == 0 || body > kMaxRecordBody) bad(where() + " has a bad length");
    if (left < head + 8 + body) {
      out.truncated = true;
      break;
    }
    if (detail::load_le<u64>(h + at + head + body) != checksum64(h + at, head + body, 4))
      bad(where() + ": checksum mismatch");
    const std::uint8_t op = static_cast<std::uint8_t>(h[at + head]);
    Reader r(journal.subspan(at + head + 1, body - 1));
    try {
      apply_record(engine, op, r, version);
    } catch (const CorruptSnapshot& e) {
      throw CorruptSnapshot(std::string(e.what()) + " (record " + std::to_string(out.records) + ", " + op_name(op) +
                            ")");
    } catch (const Error& e) {
      bad("record " + std::to_string(out.records) + " (" + op_name(op) + ") failed on replay: " + e.what());
    }
    at += head + 8 + body;
    ++out.records;
    out.valid_bytes = at;
  }
  return out;
}

}  // namespace deleverage
