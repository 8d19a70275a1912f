// State changes as commands: one type per state-changing Engine call, holding its arguments.
//
// Engine::apply(command) runs the call and, when it succeeded, hands the command to the
// engine's recorder (a Journal, journal.hpp), which encodes it; replay_journal decodes each
// record back into its command and applies it. So an operation is written once: its command
// type here (arguments, code, name, the Engine call), its record in commands.cpp (encode and
// decode side by side), and an alternative of `Command`.
//
// Array arguments are spans over the caller's memory, read only during apply().
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <type_traits>
#include <variant>
#include <vector>

#include "deleverage/engine.hpp"

namespace deleverage {

// The code of each command in journal records. Append only: the values are in files.
enum class JournalOp : std::uint8_t {
  AddMarket = 1,
  Deposit = 2,
  Withdraw = 3,
  LoadPositions = 4,
  Trade = 5,
  Trades = 6,
  SetMarks = 7,
  CheckMarginFull = 8,   // revalues every market (check_margin / check_margin_values / check_margin_into)
  CheckMarginMoved = 9,  // check_margin(moved)
  GiveMarketOwnPool = 10,
  InsuranceDeposit = 11,
  SetDrawdownRule = 12,
  Liquidate = 13,          // the config as (key, value) pairs (commands.cpp)
  AdlRanking = 14,         // revalues moved markets as a side effect
  AdlFill = 15,            // Engine::adl_fill (C++ only)
  LiquidateAccounts = 16,  // liquidate(config, accounts): the config as for Liquidate, then the accounts
  AdlRank = 17,            // refreshes a stale queue as a side effect
  SetAdlRefresh = 18,
  LoadBalances = 19,
};

namespace commands {

struct AddMarket {
  static constexpr JournalOp kOp = JournalOp::AddMarket;
  static constexpr const char* kName = "add_market";
  MarketSpec spec;
  MarketId run(Engine& e) const { return e.add_market(spec); }
};

struct Deposit {
  static constexpr JournalOp kOp = JournalOp::Deposit;
  static constexpr const char* kName = "deposit";
  std::span<const i64> accounts, amounts;
  void run(Engine& e) const { e.deposit(accounts, amounts); }
};

struct Withdraw {
  static constexpr JournalOp kOp = JournalOp::Withdraw;
  static constexpr const char* kName = "withdraw";
  std::span<const i64> accounts, amounts;
  void run(Engine& e) const { e.withdraw(accounts, amounts); }
};

struct LoadBalances {
  static constexpr JournalOp kOp = JournalOp::LoadBalances;
  static constexpr const char* kName = "load_balances";
  std::span<const i64> accounts, balances;
  void run(Engine& e) const { e.load_balances(accounts, balances); }
};

struct LoadPositions {
  static constexpr JournalOp kOp = JournalOp::LoadPositions;
  static constexpr const char* kName = "load_positions";
  std::span<const i64> accounts;
  std::span<const MarketId> markets;
  std::span<const i64> sizes, entry_prices;
  std::optional<i64> counterparty;
  void run(Engine& e) const { e.load_positions(accounts, markets, sizes, entry_prices, counterparty); }
};

struct Trade {
  static constexpr JournalOp kOp = JournalOp::Trade;
  static constexpr const char* kName = "trade";
  i64 buyer = 0, seller = 0;
  MarketId market = 0;
  i64 size = 0, price = 0;
  void run(Engine& e) const { e.trade(buyer, seller, market, size, price); }
};

struct Trades {
  static constexpr JournalOp kOp = JournalOp::Trades;
  static constexpr const char* kName = "trades";
  std::span<const i64> buyers, sellers;
  std::span<const MarketId> markets;
  std::span<const i64> sizes, prices;
  void run(Engine& e) const { e.trades(buyers, sellers, markets, sizes, prices); }
};

struct AdlFill {
  static constexpr JournalOp kOp = JournalOp::AdlFill;
  static constexpr const char* kName = "adl_fill";
  i64 bankrupt = 0, winner = 0;
  MarketId market = 0;
  i64 lots = 0, price = 0;
  void run(Engine& e) const { e.adl_fill(bankrupt, winner, market, lots, price); }
};

struct SetMarks {
  static constexpr JournalOp kOp = JournalOp::SetMarks;
  static constexpr const char* kName = "set_marks";
  std::span<const MarketId> markets;
  std::span<const i64> prices;
  void run(Engine& e) const { e.set_marks(markets, prices); }
};

// The full margin check. Recorded because it moves every market's valued mark (the kept
// queues and the incremental check start from there); the three outputs record alike.
struct CheckMargin {
  static constexpr JournalOp kOp = JournalOp::CheckMarginFull;
  static constexpr const char* kName = "check_margin";
  enum class Output : std::uint8_t {
    Report,            // check_margin(): a report with the account ids
    ReportWithoutIds,  // check_margin_values()
    Into,              // check_margin_into(*into): the caller's columns; the result is empty
  };
  Output output = Output::Report;
  const MarginColumns* into = nullptr;
  MarginReport run(Engine& e) const {
    if (output == Output::Into) {
      e.check_margin_into(*into);
      return {};
    }
    return output == Output::Report ? e.check_margin() : e.check_margin_values();
  }
};

struct CheckMarginMoved {
  static constexpr JournalOp kOp = JournalOp::CheckMarginMoved;
  static constexpr const char* kName = "check_margin(moved)";
  std::span<const MarketId> moved;
  MarginReport run(Engine& e) const { return e.check_margin(moved); }
};

struct GiveMarketOwnPool {
  static constexpr JournalOp kOp = JournalOp::GiveMarketOwnPool;
  static constexpr const char* kName = "give_market_own_pool";
  MarketId market = 0;
  int run(Engine& e) const { return e.give_market_own_pool(market); }
};

struct InsuranceDeposit {
  static constexpr JournalOp kOp = JournalOp::InsuranceDeposit;
  static constexpr const char* kName = "insurance_deposit";
  i64 amount = 0;
  int pool = 0;
  void run(Engine& e) const { e.insurance_deposit(amount, pool); }
};

struct SetDrawdownRule {
  static constexpr JournalOp kOp = JournalOp::SetDrawdownRule;
  static constexpr const char* kName = "set_drawdown_rule";
  i64 max_drawdown = 0;
  int window = 0;
  void run(Engine& e) const { e.set_drawdown_rule(max_drawdown, window); }
};

struct Liquidate {
  static constexpr JournalOp kOp = JournalOp::Liquidate;
  static constexpr const char* kName = "liquidate";
  WaterfallConfig config;
  WaterfallResult run(Engine& e) const { return e.liquidate(config); }
};

struct LiquidateAccounts {
  static constexpr JournalOp kOp = JournalOp::LiquidateAccounts;
  static constexpr const char* kName = "liquidate(accounts)";
  WaterfallConfig config;
  std::span<const i64> accounts;
  WaterfallResult run(Engine& e) const { return e.liquidate(config, accounts); }
};

// The ADL indicator; recorded because it revalues the moved markets. `split` shapes only the
// report (the expected loss), so the record leaves it out.
struct AdlRanking {
  static constexpr JournalOp kOp = JournalOp::AdlRanking;
  static constexpr const char* kName = "adl_ranking";
  MarketId market = 0;
  Ranking ranking = Ranking::BitMEX;
  DeficitSplit split = DeficitSplit::Loss;
  AdlRankingReport run(Engine& e) const { return e.adl_ranking(market, ranking, split); }
};

// One account's rank; recorded because it refreshes a stale queue.
struct AccountAdlRank {
  static constexpr JournalOp kOp = JournalOp::AdlRank;
  static constexpr const char* kName = "adl_rank";
  i64 account = 0;
  MarketId market = 0;
  Ranking ranking = Ranking::BitMEX;
  AdlRank run(Engine& e) const { return e.adl_rank(account, market, ranking); }
};

struct SetAdlRefresh {
  static constexpr JournalOp kOp = JournalOp::SetAdlRefresh;
  static constexpr const char* kName = "set_adl_refresh";
  AdlRefresh policy = AdlRefresh::Exact;
  i64 every = 1;
  void run(Engine& e) const { e.set_adl_refresh(policy, every); }
};

}  // namespace commands

// Every command. A new operation adds its type here (at the end, any order works: records
// are told apart by kOp).
using Command =
    std::variant<commands::AddMarket, commands::Deposit, commands::Withdraw, commands::LoadBalances,
                 commands::LoadPositions, commands::Trade, commands::Trades, commands::AdlFill, commands::SetMarks,
                 commands::CheckMargin, commands::CheckMarginMoved, commands::GiveMarketOwnPool,
                 commands::InsuranceDeposit, commands::SetDrawdownRule, commands::Liquidate,
                 commands::LiquidateAccounts, commands::AdlRanking, commands::AccountAdlRank, commands::SetAdlRefresh>;

// Receives every command Engine::apply ran successfully, after it ran (Engine::set_recorder).
// If record() throws, the state has changed all the same (a journal marks itself incomplete).
class Recorder {
 public:
  virtual ~Recorder() = default;
  virtual void record(const Command& command) = 0;
};

// The name of a record's code ("unknown" for a code no command has).
const char* command_name(std::uint8_t op);

// A waterfall configuration's bytes as the liquidate records hold them (key, value pairs;
// docs/durability.md), and back (CorruptSnapshot for bytes that are not one).
std::vector<std::byte> encode_waterfall_config(const WaterfallConfig& config);
WaterfallConfig decode_waterfall_config(std::span<const std::byte> bytes);

template <class C>
auto Engine::apply(const C& command) {
  using Result = decltype(command.run(*this));
  if constexpr (std::is_void_v<Result>) {
    command.run(*this);
    if (recorder_.ptr != nullptr) recorder_.ptr->record(Command(command));
  } else {
    Result result = command.run(*this);
    if (recorder_.ptr != nullptr) recorder_.ptr->record(Command(command));
    return result;
  }
}

}  // namespace deleverage
