// The journal record body of each command: encode and decode side by side, one pair per
// command (byte layout: docs/durability.md, "Records").
#include "command_record.hpp"

#include <bit>
#include <iterator>
#include <limits>
#include <string>
#include <utility>

namespace deleverage::detail {

namespace {

[[noreturn]] void bad(const std::string& what) { throw CorruptSnapshot("journal: " + what); }

template <class T>
void put_span(Writer& w, std::span<const T> v) {
  w.put<u64>(v.size());
  w.array(v.data(), v.size());
}
template <class T>
std::span<const T> get_span(Reader& r, DecodedArrays& arrays) {
  const std::size_t n = r.count<u64>(sizeof(T), std::numeric_limits<std::size_t>::max(), "array length");
  std::vector<T> out(n);
  r.array(out.data(), n);
  return arrays.keep(std::move(out));
}

template <class E>
E enum_value(i64 v, int count, const char* what) {
  if (v < 0 || v >= count) bad(std::string(what) + " has unknown value " + std::to_string(v));
  return static_cast<E>(v);
}

// ---- the waterfall configuration: (key, value) pairs, so that a field added later gets a
// new key and older journals (without it) keep their meaning.
enum class LiquidateKey : std::uint16_t {
  ExecutorKind = 1,
  ExecutorAccount = 2,
  SlippageRate = 3,
  ImpactRate = 4,
  ImpactDepth = 5,
  Partial = 6,
  Mode = 7,
  Policy = 8,
  Ranking = 9,
  AdlPrice = 10,
  Theta = 11,  // 1e-8 units, -1 = deficit matching
  Cap = 12,    // 1e-8 units
  Lot = 13,
  GKind = 14,         // RiskFunction::Kind
  GParam = 15,        // the double's bits
  Seed = 16,          // the uint64's bits
  DeficitSplit = 17,  // absent in journals written before it: DeficitSplit::Maintenance (the rule then)
};

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

void set_config_value(WaterfallConfig& c, std::uint16_t key, i64 v) {
  switch (static_cast<LiquidateKey>(key)) {
    case LiquidateKey::ExecutorKind:
      c.executor.kind = enum_value<ExecutorKind>(v, 2, "liquidate setting executor kind");
      return;
    case LiquidateKey::ExecutorAccount:
      c.executor.account = v;
      return;
    case LiquidateKey::SlippageRate:
      c.executor.slippage_rate = v;
      return;
    case LiquidateKey::ImpactRate:
      c.executor.impact_rate = v;
      return;
    case LiquidateKey::ImpactDepth:
      c.executor.impact_depth = v;
      return;
    case LiquidateKey::Partial:
      c.executor.partial = enum_value<int>(v, 2, "liquidate setting partial") != 0;
      return;
    case LiquidateKey::Mode:
      c.mode = enum_value<WaterfallMode>(v, 2, "liquidate setting mode");
      return;
    case LiquidateKey::Policy:
      c.policy = enum_value<Policy>(v, kPolicyCount, "liquidate setting policy");
      return;
    case LiquidateKey::Ranking:
      c.ranking = enum_value<Ranking>(v, 3, "liquidate setting ranking");
      return;
    case LiquidateKey::AdlPrice:
      c.adl_price = enum_value<AdlPrice>(v, 3, "liquidate setting adl_price");
      return;
    case LiquidateKey::Theta:
      c.theta = v;  // range checked by Engine::liquidate on replay
      return;
    case LiquidateKey::Cap:
      c.cap = v;
      return;
    case LiquidateKey::Lot:
      c.lot = v;
      return;
    case LiquidateKey::GKind:
      c.g.kind = enum_value<RiskFunction::Kind>(v, 3, "liquidate setting g kind");
      return;
    case LiquidateKey::GParam:
      c.g.param = std::bit_cast<double>(v);
      return;
    case LiquidateKey::Seed:
      c.seed = std::bit_cast<std::uint64_t>(v);
      return;
    case LiquidateKey::DeficitSplit:
      c.deficit_split = enum_value<DeficitSplit>(v, 2, "liquidate setting deficit_split");
      return;
  }
  bad("unknown liquidate setting key " + std::to_string(key) + " (written by a newer version?)");
}

WaterfallConfig get_config(Reader& r) {
  WaterfallConfig c;
  c.deficit_split = DeficitSplit::Maintenance;  // journals without the key were written under this rule
  const std::size_t n = r.count<std::uint32_t>(10, 1024, "liquidate setting count");
  for (std::size_t i = 0; i < n; ++i) {
    const auto key = r.get<std::uint16_t>();
    set_config_value(c, key, r.get<i64>());
  }
  return c;
}

// ---- one encode and one decode per command

using namespace commands;

void encode(Writer& w, const AddMarket& c) { write_market_spec(w, c.spec); }
void decode(Reader& r, DecodedArrays&, std::uint32_t version, AddMarket& c) {
  c.spec = read_market_spec(r, version >= 3);  // version 3 added mark_decimals
}

// Deposit, Withdraw and LoadBalances: two arrays (accounts, amounts or balances).
void encode(Writer& w, const Deposit& c) {
  put_span(w, c.accounts);
  put_span(w, c.amounts);
}
void decode(Reader& r, DecodedArrays& a, std::uint32_t, Deposit& c) {
  c.accounts = get_span<i64>(r, a);
  c.amounts = get_span<i64>(r, a);
}
void encode(Writer& w, const Withdraw& c) {
  put_span(w, c.accounts);
  put_span(w, c.amounts);
}
void decode(Reader& r, DecodedArrays& a, std::uint32_t, Withdraw& c) {
  c.accounts = get_span<i64>(r, a);
  c.amounts = get_span<i64>(r, a);
}
void encode(Writer& w, const LoadBalances& c) {
  put_span(w, c.accounts);
  put_span(w, c.balances);
}
void decode(Reader& r, DecodedArrays& a, std::uint32_t, LoadBalances& c) {
  c.accounts = get_span<i64>(r, a);
  c.balances = get_span<i64>(r, a);
}

void encode(Writer& w, const LoadPositions& c) {
  put_span(w, c.accounts);
  put_span(w, c.markets);
  put_span(w, c.sizes);
  put_span(w, c.entry_prices);
  w.put<std::uint8_t>(c.counterparty ? 1 : 0);
  w.put<i64>(c.counterparty.value_or(0));
}
void decode(Reader& r, DecodedArrays& a, std::uint32_t, LoadPositions& c) {
  c.accounts = get_span<i64>(r, a);
  c.markets = get_span<MarketId>(r, a);
  c.sizes = get_span<i64>(r, a);
  c.entry_prices = get_span<i64>(r, a);
  const auto has_cp = enum_value<std::uint8_t>(r.get<std::uint8_t>(), 2, "load_positions counterparty flag");
  const i64 cp = r.get<i64>();
  if (has_cp) c.counterparty = cp;
}

void encode(Writer& w, const Trade& c) {
  w.put<i64>(c.buyer);
  w.put<i64>(c.seller);
  w.put<MarketId>(c.market);
  w.put<i64>(c.size);
  w.put<i64>(c.price);
}
void decode(Reader& r, DecodedArrays&, std::uint32_t, Trade& c) {
  c.buyer = r.get<i64>();
  c.seller = r.get<i64>();
  c.market = r.get<MarketId>();
  c.size = r.get<i64>();
  c.price = r.get<i64>();
}

void encode(Writer& w, const Trades& c) {
  put_span(w, c.buyers);
  put_span(w, c.sellers);
  put_span(w, c.markets);
  put_span(w, c.sizes);
  put_span(w, c.prices);
}
void decode(Reader& r, DecodedArrays& a, std::uint32_t, Trades& c) {
  c.buyers = get_span<i64>(r, a);
  c.sellers = get_span<i64>(r, a);
  c.markets = get_span<MarketId>(r, a);
  c.sizes = get_span<i64>(r, a);
  c.prices = get_span<i64>(r, a);
}

void encode(Writer& w, const AdlFill& c) {
  w.put<i64>(c.bankrupt);
  w.put<i64>(c.winner);
  w.put<MarketId>(c.market);
  w.put<i64>(c.lots);
  w.put<i64>(c.price);
}
void decode(Reader& r, DecodedArrays&, std::uint32_t, AdlFill& c) {
  c.bankrupt = r.get<i64>();
  c.winner = r.get<i64>();
  c.market = r.get<MarketId>();
  c.lots = r.get<i64>();
  c.price = r.get<i64>();
}

void encode(Writer& w, const SetMarks& c) {
  put_span(w, c.markets);
  put_span(w, c.prices);
}
void decode(Reader& r, DecodedArrays& a, std::uint32_t, SetMarks& c) {
  c.markets = get_span<MarketId>(r, a);
  c.prices = get_span<i64>(r, a);
}

void encode(Writer&, const CheckMargin&) {}  // the three outputs record alike: no body
void decode(Reader&, DecodedArrays&, std::uint32_t, CheckMargin& c) {
  c.output = CheckMargin::Output::ReportWithoutIds;
}

void encode(Writer& w, const CheckMarginMoved& c) { put_span(w, c.moved); }
void decode(Reader& r, DecodedArrays& a, std::uint32_t, CheckMarginMoved& c) { c.moved = get_span<MarketId>(r, a); }

void encode(Writer& w, const GiveMarketOwnPool& c) { w.put<MarketId>(c.market); }
void decode(Reader& r, DecodedArrays&, std::uint32_t, GiveMarketOwnPool& c) { c.market = r.get<MarketId>(); }

void encode(Writer& w, const InsuranceDeposit& c) {
  w.put<i64>(c.amount);
  w.put<std::int32_t>(c.pool);
}
void decode(Reader& r, DecodedArrays&, std::uint32_t, InsuranceDeposit& c) {
  c.amount = r.get<i64>();
  c.pool = r.get<std::int32_t>();
}

void encode(Writer& w, const SetDrawdownRule& c) {
  w.put<i64>(c.max_drawdown);
  w.put<std::int32_t>(c.window);
}
void decode(Reader& r, DecodedArrays&, std::uint32_t, SetDrawdownRule& c) {
  c.max_drawdown = r.get<i64>();
  c.window = r.get<std::int32_t>();
}

void encode(Writer& w, const Liquidate& c) { put_config(w, c.config); }
void decode(Reader& r, DecodedArrays&, std::uint32_t, Liquidate& c) { c.config = get_config(r); }

void encode(Writer& w, const LiquidateAccounts& c) {
  put_config(w, c.config);
  put_span(w, c.accounts);
}
void decode(Reader& r, DecodedArrays& a, std::uint32_t, LiquidateAccounts& c) {
  c.config = get_config(r);
  c.accounts = get_span<i64>(r, a);
}

void encode(Writer& w, const AdlRanking& c) {  // `split` only shapes the report: not recorded
  w.put<MarketId>(c.market);
  w.put<std::uint8_t>(static_cast<std::uint8_t>(c.ranking));
}
void decode(Reader& r, DecodedArrays&, std::uint32_t, AdlRanking& c) {
  c.market = r.get<MarketId>();
  c.ranking = enum_value<Ranking>(r.get<std::uint8_t>(), 3, "adl_ranking ranking");
}

void encode(Writer& w, const AccountAdlRank& c) {
  w.put<i64>(c.account);
  w.put<MarketId>(c.market);
  w.put<std::uint8_t>(static_cast<std::uint8_t>(c.ranking));
}
void decode(Reader& r, DecodedArrays&, std::uint32_t, AccountAdlRank& c) {
  c.account = r.get<i64>();
  c.market = r.get<MarketId>();
  c.ranking = enum_value<Ranking>(r.get<std::uint8_t>(), 3, "adl_rank ranking");
}

void encode(Writer& w, const SetAdlRefresh& c) {
  w.put<std::uint8_t>(static_cast<std::uint8_t>(c.policy));
  w.put<i64>(c.every);
}
void decode(Reader& r, DecodedArrays&, std::uint32_t, SetAdlRefresh& c) {
  c.policy = enum_value<AdlRefresh>(r.get<std::uint8_t>(), 2, "set_adl_refresh policy");
  c.every = r.get<i64>();
}

// Finds the command whose code is `op` among Command's alternatives and decodes it.
template <std::size_t I = 0>
Command decode_alternative(std::uint8_t op, Reader& r, DecodedArrays& arrays, std::uint32_t version) {
  if constexpr (I == std::variant_size_v<Command>) {
    bad("unknown record op " + std::to_string(op));
  } else {
    using C = std::variant_alternative_t<I, Command>;
    if (op != static_cast<std::uint8_t>(C::kOp)) return decode_alternative<I + 1>(op, r, arrays, version);
    C command;
    decode(r, arrays, version, command);
    if (!r.done())
      bad(std::string("malformed ") + C::kName + " record (" + std::to_string(r.remaining()) + " unexpected bytes)");
    return command;
  }
}

template <std::size_t I = 0>
const char* name_of(std::uint8_t op) {
  if constexpr (I == std::variant_size_v<Command>) {
    return "unknown";
  } else {
    using C = std::variant_alternative_t<I, Command>;
    return op == static_cast<std::uint8_t>(C::kOp) ? C::kName : name_of<I + 1>(op);
  }
}

}  // namespace

void encode_command(Writer& w, const Command& command) {
  std::visit([&](const auto& c) { encode(w, c); }, command);
}

JournalOp command_op(const Command& command) {
  return std::visit([](const auto& c) { return std::decay_t<decltype(c)>::kOp; }, command);
}

Command decode_command(std::uint8_t op, Reader& r, DecodedArrays& arrays, std::uint32_t version) {
  return decode_alternative(op, r, arrays, version);
}

}  // namespace deleverage::detail

namespace deleverage {
const char* command_name(std::uint8_t op) { return detail::name_of(op); }

std::vector<std::byte> encode_waterfall_config(const WaterfallConfig& config) {
  detail::Writer w;
  detail::put_config(w, config);
  const column<std::byte> bytes = w.take();
  return std::vector<std::byte>(bytes.begin(), bytes.end());
}

WaterfallConfig decode_waterfall_config(std::span<const std::byte> bytes) {
  detail::Reader r(bytes);
  WaterfallConfig c = detail::get_config(r);
  if (!r.done()) detail::bad("waterfall configuration: " + std::to_string(r.remaining()) + " unexpected bytes");
  return c;
}
}  // namespace deleverage
