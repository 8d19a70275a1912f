// The journal: an append-only file of every state-changing call on an engine, so that a
// snapshot plus the journal written after it rebuild the state exactly (replay_journal).
// Format and guarantees: docs/durability.md.
//
// Use: open a Journal on an engine, then make every state-changing call THROUGH the journal
// (journal.deposit(engine, ...) instead of engine.deposit(...)). Each call is applied to the
// engine first; only a call that succeeded writes its record, so a call that throws leaves
// both the engine and the journal as they were. Each record reaches the operating system
// in one write() (it survives a crash of the process); close() and sync() also fsync.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "deleverage/engine.hpp"
#include "deleverage/waterfall.hpp"

namespace deleverage {

// Version 2 frames each record with a checked length (docs/durability.md); version 1 files
// (length without a check) are still read. Version 3 adds mark_decimals to add_market
// records; older journals replay with marks on the order tick.
inline constexpr std::uint32_t kJournalVersion = 3;
inline constexpr std::size_t kJournalHeaderBytes = 40;

// The check stored after each record's length (version 2): a bijection of the length, so
// any damage confined to the length or the check is detected (docs/durability.md).
std::uint32_t journal_length_check(std::uint32_t length);

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
  Liquidate = 13,          // the config as (key, value) pairs: see LiquidateKey
  AdlRanking = 14,         // revalues moved markets as a side effect
  AdlFill = 15,            // Engine::adl_fill (C++ only)
  LiquidateAccounts = 16,  // liquidate(config, accounts): the config as for Liquidate, then the accounts
  AdlRank = 17,            // refreshes a stale queue as a side effect
  SetAdlRefresh = 18,
  LoadBalances = 19,
};

// Keys of the liquidate record's settings. New WaterfallConfig fields get new keys; a reader
// refuses keys it does not know (the journal was written by a newer version).
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

struct JournalReplay {
  std::size_t records = 0;      // whole records applied
  bool truncated = false;       // the file ended inside a record (the partial tail was ignored)
  std::size_t valid_bytes = 0;  // bytes up to the end of the last whole record
  std::size_t total_bytes = 0;  // size of the input
};

class Journal {
 public:
  // Creates (or replaces) the journal file at `path`; its header records the state hash of
  // `base`, the state the journal starts from. Throws Error on I/O failure.
  Journal(const std::string& path, const Engine& base);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // fsync and close; further calls throw. Idempotent.
  void close();
  // fsync what was written so far.
  void sync();
  bool is_open() const { return fd_ >= 0; }
  std::size_t records() const { return records_; }
  const std::string& path() const { return path_; }

  // Apply-and-record: each calls the same Engine method and records it if it succeeded.
  MarketId add_market(Engine& e, const MarketSpec& spec);
  void deposit(Engine& e, std::span<const i64> accounts, std::span<const i64> amounts);
  void withdraw(Engine& e, std::span<const i64> accounts, std::span<const i64> amounts);
  void load_balances(Engine& e, std::span<const i64> accounts, std::span<const i64> balances);
  void load_positions(Engine& e, std::span<const i64> accounts, std::span<const MarketId> markets,
                      std::span<const i64> sizes, std::span<const i64> entry_prices,
                      std::optional<i64> counterparty = std::nullopt);
  void trade(Engine& e, i64 buyer, i64 seller, MarketId market, i64 size, i64 price);
  void trades(Engine& e, std::span<const i64> buyers, std::span<const i64> sellers, std::span<const MarketId> markets,
              std::span<const i64> sizes, std::span<const i64> prices);
  void set_marks(Engine& e, std::span<const MarketId> markets, std::span<const i64> prices);
  MarginReport check_margin(Engine& e);
  MarginReport check_margin_values(Engine& e);
  void check_margin_into(Engine& e, const MarginColumns& out);
  MarginReport check_margin(Engine& e, std::span<const MarketId> moved);
  int give_market_own_pool(Engine& e, MarketId m);
  void insurance_deposit(Engine& e, i64 amount, int pool);
  void set_drawdown_rule(Engine& e, i64 max_drawdown, int window);
  WaterfallResult liquidate(Engine& e, const WaterfallConfig& config);
  WaterfallResult liquidate(Engine& e, const WaterfallConfig& config, std::span<const i64> accounts);
  AdlRank adl_rank(Engine& e, i64 account, MarketId m, Ranking ranking);
  void set_adl_refresh(Engine& e, AdlRefresh policy, i64 every);
  // `split` only shapes the report (the expected loss); the record is the same for either.
  AdlRankingReport adl_ranking(Engine& e, MarketId m, Ranking ranking, DeficitSplit split = DeficitSplit::Loss);
  void adl_fill(Engine& e, i64 bankrupt, i64 winner, MarketId market, i64 lots, i64 price);

 private:
  void append(JournalOp op, std::span<const std::byte> payload);
  int fd_ = -1;
  bool broken_ = false;
  std::size_t records_ = 0;
  std::string path_;
};

// Applies the records of a journal to `engine`, which must be in the state the journal
// started from (its state hash must equal the header's, else CorruptSnapshot). Stops at the
// last whole record: a tail cut off mid-record is ignored and reported (truncated = true).
// A damaged whole record, an unknown op or a record the engine refuses throws
// CorruptSnapshot; the engine is then partly replayed: replay into a fresh copy.
JournalReplay replay_journal(Engine& engine, std::span<const std::byte> journal);

}  // namespace deleverage
