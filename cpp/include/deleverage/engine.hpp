// The exchange state and the operations on it: the class an embedding application uses.
// See docs/semantics.md for the exact integer contract every operation follows.
//
// Units everywhere: money in integer units of 10^-money_decimals quote currency; sizes in
// lots of 10^-qty_decimals base units and prices in ticks of 10^-mark_decimals quote units
// (the mark unit, price_decimals unless the market's spec asks for finer marks; trade and entry
// prices must be whole order ticks of 10^-price_decimals), both per market; rates in 1e-8
// (kRateScale). Account ids are any int64 chosen by
// the caller; market ids are the dense ints returned by add_market (0, 1, ...).
//
// Errors: every failure throws a deleverage::Error subclass (errors.hpp) whose message names
// the offending field and row.
//
// Layout (structure of arrays):
//  * accounts: id, balance, and a block [start, start+count) of position slots with spare
//    capacity; an account's positions are contiguous, so the full margin check streams.
//  * positions: size (lots), entry notional (money), market id, and the position's index
//    in its market's account list. Closing a position swap-removes it inside its block;
//    a block that outgrows its capacity moves to the end (amortized O(1)); the arrays are
//    compacted when more than half of them is abandoned blocks.
//  * per market: the list of accounts holding a position there, so that a mark move only
//    touches those; per-account cached sums (at each market's last valued mark) make the
//    incremental check cost proportional to the positions in the moved markets.
//
// Every operation validates all of its input before it changes anything; a call that
// throws leaves the state exactly as it was.
//
// Thread safety: an Engine is not internally synchronized. Concurrent calls need external
// locking (the Python binding holds a per-engine mutex).
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "deleverage/account_index.hpp"
#include "deleverage/book.hpp"
#include "deleverage/detail/adl_queue.hpp"
#include "deleverage/detail/relaxed_max.hpp"
#include "deleverage/detail/uninit.hpp"
#include "deleverage/fixed_point.hpp"
#include "deleverage/insurance.hpp"
#include "deleverage/market.hpp"
#include "deleverage/market_table.hpp"
#include "deleverage/waterfall.hpp"

namespace deleverage {

class Recorder;  // commands.hpp

// Sorts a vector that is sorted except for a few displaced entries (an insertion pass when
// few are out of place, std::sort otherwise). Internal helper of the incremental check.
void sort_nearly_sorted(std::vector<std::uint32_t>& v);

// Per-account results of a margin check, one row per reported account.
struct MarginReport {
  column<i64> account_id;
  column<i64> equity;                 // money units, rounded down
  column<i64> maintenance;            // money units, rounded up
  column<i64> initial;                // money units, rounded up
  column<std::uint8_t> liquidatable;  // equity < maintenance
  column<std::uint8_t> bankrupt;      // equity < 0

  // Sizes every column to n rows (uninitialized: the check writes each row once).
  void resize(std::size_t n) {
    account_id.resize(n);
    equity.resize(n);
    maintenance.resize(n);
    initial.resize(n);
    liquidatable.resize(n);
    bankrupt.resize(n);
  }
};

// Caller-owned output columns of a full margin check, one row per account in creation order
// (Engine::check_margin_into). The exact columns (money units) and the float columns (quote
// currency: value / 10^money_decimals, and maintenance / equity) are each all set or all null;
// the two flag columns are always set.
struct MarginColumns {
  i64* equity = nullptr;
  i64* maintenance = nullptr;
  i64* initial = nullptr;
  double* equity_quote = nullptr;
  double* maintenance_quote = nullptr;
  double* initial_quote = nullptr;
  double* margin_ratio = nullptr;
  std::uint8_t* liquidatable = nullptr;
  std::uint8_t* bankrupt = nullptr;
};

// One account's margin at the current marks.
struct AccountMargin {
  i64 equity = 0;
  i64 maintenance = 0;
  i64 initial = 0;
  bool liquidatable = false;
  bool bankrupt = false;
};

// Every open position, ordered by account creation order, then market id.
struct PositionReport {
  std::vector<i64> account_id;
  std::vector<MarketId> market;
  std::vector<i64> size;               // lots, signed
  std::vector<i64> entry_notional;     // money units, signed like size
  std::vector<i64> unrealized_pnl;     // money units, rounded down
  std::vector<i64> liquidation_price;  // ticks; 0 = none
  std::vector<i64> bankruptcy_price;   // ticks; 0 = none
};

// Totals of the external flows used by the conservation invariant.
struct Flows {
  i128 deposits = 0;
  i128 withdrawals = 0;
  i128 loaded_entry_notional = 0;
  i128 insurance_deposits = 0;
  // Sum of the changes load_balances made to balances (signed): an imported book's
  // balances, negative ones included, enter conservation like deposits do.
  i128 loaded_balances = 0;

  // The flows' part of the snapshot payload and of the state hash (docs/durability.md).
  template <class Out>
  void write(Out& w) const {
    w.template put<i128>(deposits);
    w.template put<i128>(withdrawals);
    w.template put<i128>(loaded_entry_notional);
    w.template put<i128>(insurance_deposits);
    w.template put<i128>(loaded_balances);  // version 2
  }
  void read(detail::Reader& r, std::uint32_t version) {
    deposits = r.get<i128>();
    withdrawals = r.get<i128>();
    loaded_entry_notional = r.get<i128>();
    insurance_deposits = r.get<i128>();
    if (version >= 2) loaded_balances = r.get<i128>();
  }
  void hash(detail::Hasher& g) const {
    for (i128 v : {deposits, withdrawals, loaded_entry_notional, insurance_deposits}) {
      g.add(static_cast<u64>(static_cast<u128>(v)));
      g.add(static_cast<u64>(static_cast<u128>(v) >> 64));
    }
    if (loaded_balances != 0) {  // hashed only when used: earlier states keep their hashes
      g.add(static_cast<u64>(static_cast<u128>(loaded_balances)));
      g.add(static_cast<u64>(static_cast<u128>(loaded_balances) >> 64));
    }
  }
};

// A 128-bit hash of the logical state (see Engine::state_hash).
struct StateHash {
  u64 lo = 0, hi = 0;
  friend bool operator==(const StateHash&, const StateHash&) = default;
};

class Engine {
 public:
  // money_decimals in [0, 12]; threads = 0 uses every hardware thread for batch checks.
  explicit Engine(int money_decimals = 6, int threads = 0);

  // Copyable: a copy is a deep, independent copy of the whole state.

  // ---- commands (commands.hpp) ----
  // Runs one state-changing call given as a command (commands::Deposit{accounts, amounts},
  // ...) and, when it succeeded, hands the command to the recorder. Calls made through the
  // methods below are not recorded: with a recorder set, make every state-changing call
  // through apply(). Defined in commands.hpp.
  template <class C>
  auto apply(const C& command);
  // The recorder apply() reports to (a Journal), not owned; nullptr: none. A copy of the
  // engine starts without one.
  void set_recorder(Recorder* recorder) { recorder_.ptr = recorder; }
  Recorder* recorder() const { return recorder_.ptr; }

  // ---- configuration ----
  // Adds a market and returns its id (the next integer). Throws ConfigError for an empty or
  // repeated symbol, decimals out of range (qty + price decimals may exceed money_decimals
  // by at most 8), bad rates or tiers, or more than 1024 markets.
  MarketId add_market(const MarketSpec& spec);
  int money_decimals() const { return markets_.money_decimals(); }
  // Threads used by batch checks and the waterfall's parallel parts; 0 = every hardware
  // thread. A stress path running beside others sets 1 on its own copy.
  void set_threads(int threads);
  int threads() const { return threads_; }
  std::size_t market_count() const { return markets_.size(); }
  // The spec as given, and the validated tier table (UnknownId for an unknown market).
  const MarketSpec& market_spec(MarketId m) const;
  const std::vector<Tier>& market_tiers(MarketId m) const;
  // The current mark (ticks); 0 until set_marks sets one.
  i64 mark(MarketId m) const;
  // Sum of signed sizes in a market (lots).
  i128 net_size(MarketId m) const;
  // Value of `size` lots (signed) at `price` ticks in money units, rounded down.
  i64 value_at(MarketId m, i64 size, i64 price) const;

  // ---- money in and out ----
  // Amounts >= 0 in money units; creates unknown accounts. Atomic; ids may repeat.
  void deposit(std::span<const i64> accounts, std::span<const i64> amounts);
  // Refused with InsufficientMargin if an account would end below its initial margin.
  void withdraw(std::span<const i64> accounts, std::span<const i64> amounts);
  // Importing a book: sets each account's balance to a signed value (negative: an account in
  // debt), creating unknown accounts; the changes are counted in flows().loaded_balances.
  // Atomic; an id may appear once per call.
  void load_balances(std::span<const i64> accounts, std::span<const i64> balances);

  // ---- positions ----
  // Bulk load of new positions at entry prices (ticks). counterparty: see semantics.md.
  void load_positions(std::span<const i64> accounts, std::span<const MarketId> markets, std::span<const i64> sizes,
                      std::span<const i64> entry_prices, std::optional<i64> counterparty = std::nullopt);
  // A fill of `size` lots (> 0) at `price` ticks between two different accounts. The buyer
  // pays, and the seller receives, floor(size x price) in money units (semantics.md
  // "Trades"). Atomic. No heap allocation when both accounts already hold a position in
  // `market` (or have a spare slot from an earlier position there) and none needs the book
  // compacted: the hot path of a risk service.
  void trade(i64 buyer, i64 seller, MarketId market, i64 size, i64 price);
  // One auto-deleveraging fill, the step the waterfall repeats per counterparty: closes
  // `lots` (> 0) of the bankrupt account's position in `market` against the winner's
  // opposite position, at `price` ticks (normally the bankrupt position's bankruptcy price,
  // positions().bankruptcy_price). Both positions only shrink: `lots` may not exceed either
  // |size|. The bankrupt account is credited floor(lots x price) when it is long and charged
  // ceil(lots x price) when short (money units; rounding favours solvency). The insurance
  // fund, the event log and step() are untouched: liquidate() is the full waterfall.
  // Atomic; no heap allocation.
  void adl_fill(i64 bankrupt, i64 winner, MarketId market, i64 lots, i64 price);
  // A batch of fills applied in order, atomically.
  void trades(std::span<const i64> buyers, std::span<const i64> sellers, std::span<const MarketId> markets,
              std::span<const i64> sizes, std::span<const i64> prices);

  // ---- marks and margin ----
  // Sets marks (ticks, > 0); a market may appear once. Atomic. Revalues nothing by itself:
  // account_margin reads the new marks at once, the batch checks revalue what moved.
  void set_marks(std::span<const MarketId> markets, std::span<const i64> prices);
  // Revalues every account at the current marks (parallel over accounts).
  MarginReport check_margin();
  // The same without copying the account ids into the report (account_id left empty): for
  // callers that keep their own copy of account_ids(), which only ever grows at the end.
  MarginReport check_margin_values();
  // The full check written into the caller's columns (account_count() rows each): no
  // allocation, and a float report converted in the same pass.
  void check_margin_into(const MarginColumns& out);
  // Revalues only the positions in `moved` and in any market whose mark changed since it
  // was last valued; reports the accounts holding a position in one of those markets.
  // (Past 1/50 of a large book, one full pass is cheaper and is used; same report.)
  MarginReport check_margin(std::span<const MarketId> moved);
  // One account at the current marks: equity rounded down, requirements rounded up (money
  // units). Cost proportional to the account's positions; no allocation. UnknownId for an
  // unknown account, InvalidInput if one of its markets has no mark yet.
  AccountMargin account_margin(i64 account_id) const;
  // Every open position with its PnL, liquidation and bankruptcy prices (see PositionReport).
  // Bankruptcy prices split negative equity by `split` (see DeficitSplit).
  PositionReport positions(DeficitSplit split = DeficitSplit::Loss) const;

  // ---- insurance fund ----
  // Pool 0 is shared by every market; give_market_own_pool creates a pool for one market.
  int give_market_own_pool(MarketId m);
  // The pool paying market m's deficits (0 unless give_market_own_pool was called).
  int market_pool(MarketId m) const;
  // Money units (>= 0) into a pool from outside; counted in flows().insurance_deposits.
  void insurance_deposit(i64 amount, int pool);
  // See InsuranceFund::set_drawdown_rule (max_drawdown in 1e-8 units, window in steps).
  void set_drawdown_rule(i64 max_drawdown, int window) { insurance_.set_drawdown_rule(max_drawdown, window); }
  const InsuranceFund& insurance() const { return insurance_; }

  // ---- the loss waterfall (docs/waterfall.md) ----
  // One step over every liquidatable account, worst first: detection, then the per-account
  // routine below in that order. Atomic.
  WaterfallResult liquidate(const WaterfallConfig& config);
  // One step over the given accounts only, in the order given (docs/waterfall.md "Per-account
  // liquidation"): an account that is unknown throws UnknownId naming its index; one that is
  // flat, the executor's, or not liquidatable when its turn comes is skipped and reported in
  // the result's `skipped`. Winners the call pushes under maintenance are liquidated within
  // it (cascade). Costs the accounts' positions plus their ADL fills: no pass over the book
  // with the queue policy (the pro-rata and policy-lab policies read the winners of the
  // markets they allocate in). Atomic.
  WaterfallResult liquidate(const WaterfallConfig& config, std::span<const i64> accounts);
  // The ADL indicator for one market at the current marks, read from the kept queues
  // (refreshed first if stale; no re-scoring when they are fresh).
  // `split`: how a bankrupt account's deficit is placed for the expected loss (see DeficitSplit).
  AdlRankingReport adl_ranking(MarketId m, Ranking ranking, DeficitSplit split = DeficitSplit::Loss);
  // One account's place in its side's kept queue in market m (refreshed first if stale):
  // reads the queue's entries, not the book. UnknownId if the account or market is unknown,
  // InvalidInput if it holds no position in m.
  AdlRank adl_rank(i64 account_id, MarketId m, Ranking ranking);
  // The kept queue of market m's `side` (+1 longs, -1 shorts) as it stands: no refresh.
  AdlQueueStats adl_queue_stats(MarketId m, int side) const;
  // When a kept ADL queue is refreshed (docs/waterfall.md "The kept ADL queue"): Exact (the
  // default) whenever a mark changed since its refresh; Interval: only once its market's
  // mark changed `every` (>= 1) times since. Account changes are re-scored lazily either way.
  void set_adl_refresh(AdlRefresh policy, i64 every = 1);
  AdlRefresh adl_refresh() const { return adl_refresh_; }
  i64 adl_refresh_every() const { return adl_refresh_every_; }
  // Waterfall steps run so far.
  i64 step() const { return step_; }
  // Sends the events of the following liquidate() calls to `sink` (nullptr: back to the
  // result's column log). The sink sees a failed step's events before the step is undone.
  void set_event_sink(EventSink* sink) { event_sink_ = sink; }
  // The mark (ticks) before the last set_marks that changed it (AdlPrice::PreviousMark).
  i64 previous_mark(MarketId m) const;

  // ---- inspection ----
  std::size_t account_count() const { return book_.account_count(); }
  std::size_t position_count() const { return book_.live_positions(); }
  bool has_account(i64 id) const { return book_.find(id) != AccountIndex::kNone; }
  // Collateral balance (money units): deposits - withdrawals + realized PnL, before
  // unrealized PnL. UnknownId for an unknown account.
  i64 balance(i64 account_id) const;
  // Account ids in creation order (the row order of check_margin's report).
  const std::vector<i64>& account_ids() const { return book_.ids(); }
  // Money that entered or left from outside, for the conservation invariant (money units).
  const Flows& flows() const { return flows_; }
  // Bytes held by the engine's state (capacity of every column, index and list).
  std::size_t memory_bytes() const;
  // Throws InvariantViolation if conservation, zero net size or internal consistency fails.
  void check_invariants() const;
  // A hash of the logical state (snapshot.cpp): markets (specs, marks, previous marks,
  // pools), every account (id, balance, positions sorted by market), the insurance fund
  // (pools, rule, ledger, history), flows, step and money_decimals. Independent of the order
  // in which accounts and positions were created; equal after save/load and after replay.
  StateHash state_hash() const;
  // Every account's balance (money units), in creation order (aligned with account_ids()).
  std::vector<i64> balances() const;

  // ---- internal to the core (snapshot.cpp): not a stable embedding API ----
  // The snapshot payload (docs/durability.md), each component writing its own section, to a
  // detail::Writer or snapshot.cpp's file sink; its size, about; and an engine rebuilt from
  // one (CorruptSnapshot for inconsistent contents).
  template <class Out>
  void write_payload(Out& w) const;
  std::size_t payload_estimate() const;
  static Engine read_payload(detail::Reader& r, int threads, std::uint32_t version);

  // ---- internal to the core: the parts, and the hooks the waterfall (cpp/src/waterfall/)
  // and the kept ADL queues use. Not a stable embedding API: an application uses the calls
  // above; these may change with any release. ----
  detail::Book& book() { return book_; }
  const detail::Book& book() const { return book_; }
  MarketTable& market_table() { return markets_; }
  const MarketTable& market_table() const { return markets_; }
  InsuranceFund& fund() { return insurance_; }
  EventSink* event_sink() const { return event_sink_; }
  // Scratch flags of a waterfall call, one byte per account, all zero between calls.
  std::vector<std::uint8_t>& waterfall_flags() { return wf_flags_; }

  using Sums = detail::MarginSums;
  using AccountHot = detail::AccountHot;
  struct Contribution {
    i128 u, mm, im;
  };
  static constexpr std::uint32_t kNoSlot = detail::Book::kNoSlot;

  // An account's equity e' (cash + its mark values) split over its positions by `split`
  // (docs/semantics.md, "Bankruptcy values"), in market order; share = mark value - bankruptcy
  // value. The one place the waterfall and the ADL indicator get bankruptcy values from.
  struct EquityShare {
    MarketId m;
    i64 size, entry, mark_value;  // lots, money units
    i128 share;                   // money units
  };
  std::vector<EquityShare> equity_shares(std::uint32_t a, DeficitSplit split) const;
  Contribution contribution(const MarketState& mk, i64 size, i64 entry, i64 price) const;
  AccountMargin margin_from_sums(i64 balance, const Sums& s) const;
  Sums account_sums(std::uint32_t a, bool at_valued_marks) const;
  // The representable range (docs/semantics.md): an account's equity, maintenance and initial
  // margin at the current marks must fit in int64, so that every later call can report them.
  // Whether sums `s` with `balance` satisfy it:
  bool sums_fit(i128 balance, const Sums& s) const;
  // Whether account a satisfies it now (cost: its positions; no allocation). When it does,
  // raises the range bounds below to cover the account.
  bool representable(std::uint32_t a) const;
  void note_in_range(i128 balance, const Sums& s) const;
  // Whether moving the marks of `moved` (market, old mark) to their current marks provably
  // keeps every account in range, judged from the bounds alone; if so, widens the bounds by
  // the most the move can change any account (cost: the moved markets, no account).
  bool mark_move_within_bounds(std::span<const std::pair<MarketId, i64>> moved);
  // Recomputes the bounds exactly over every account with a position (cost: the book).
  void tighten_range_bounds();
  // The first of `accounts` (in list order) that does not, or AccountIndex::kNone; parallel.
  std::uint32_t first_unrepresentable(const std::vector<std::uint32_t>& accounts) const;
  // ArithmeticOverflow naming `where` and the account (callers build `where` only on failure).
  [[noreturn]] void throw_unrepresentable(std::uint32_t a, const std::string& where) const;
  void require_marks_for_open_positions() const;

  // accounts and position storage
  std::uint32_t account_index_or_throw(i64 id, const char* field, std::size_t row) const;
  // hot in the waterfall and the kept queues: inline
  std::uint32_t find_slot(std::uint32_t a, MarketId m) const { return book_.find_slot(a, m); }
  // Sets account a's position in m to (size, entry), creating or removing it; keeps caches
  // and market lists in step. Adjusts nothing else.
  void set_position(std::uint32_t a, MarketId m, i64 size, i64 entry) {
    set_position_at(a, m, find_slot(a, m), size, entry);
  }
  // The same with the position's slot already found (find_slot(a, m), kNoSlot if none).
  void set_position_at(std::uint32_t a, MarketId m, std::uint32_t slot, i64 size, i64 entry);
  // Applies one side of a fill (semantics.md "Trades"), recording the prior state in the
  // book's undo log.
  void apply_fill(std::uint32_t a, MarketId m, i64 dq, i64 signed_value);
  // Adds `delta` (money) to account a's balance, recording the prior balance in the undo log.
  // No change note: callers note the account where the kept queues need it.
  void add_to_balance(std::uint32_t a, i64 delta);
  [[noreturn]] void throw_balance_overflow(std::uint32_t a) const;
  // Puts back every change the undo log holds past `mark`, newest first, and forgets them.
  void roll_back(std::size_t mark);

  // Every account's balance, equity and maintenance at the start of a waterfall step.
  struct StepMargins {
    column<i64> balance, equity, maintenance;
  };
  // waterfall helpers (cpp/src/waterfall/)
  WaterfallResult run_waterfall(const WaterfallConfig& config, const std::span<const i64>* accounts);
  // The kept ADL queues (cpp/src/waterfall/adl_queue.cpp): market m's queue of `side` (+1 longs,
  // -1 shorts), refreshed if stale (with the stale queues of `scope` in the same pass) and with
  // every account changed since its last use re-scored; the caches must be at the current marks.
  detail::KeptAdlQueue& adl_queue(MarketId m, int side, Ranking ranking, detail::QueueScope scope = {});
  // Pops the queue's head (a current entry of an account holding that side); false if empty.
  // `with_aside`: false for haircuts, which skip the entries they set aside.
  bool adl_queue_pop(detail::KeptAdlQueue& q, detail::AdlEntry& out, bool with_aside = true);
  void ensure_adl_queues() {
    if (adl_queues_.size() < 2 * markets_.size()) adl_queues_.resize(2 * markets_.size());
  }
  void adl_queue_push(detail::KeptAdlQueue& q, const detail::AdlEntry& e);
  void refresh_adl_queues(detail::KeptAdlQueue* const (&qs)[2], MarketId m, Ranking ranking);
  void select_adl_head(detail::KeptAdlQueue& q);
  void catch_up_adl_queues();
  bool adl_queue_marks_stale(const detail::KeptAdlQueue& q, MarketId m) const;
  void purge_superseded(detail::KeptAdlQueue& q);
  void purge_heap(detail::KeptAdlQueue& q);
  i128 position_maintenance(const MarketState& mk, i128 abs_value) const;
  // Every account whose balance or positions change is noted here for the kept queues: its
  // scores in every market it holds depend on its balance and all its positions, and the next
  // catch-up re-scores it in each of them from its positions then (so a note before the change
  // counts, and one for an account opening a position covers the new market too). Every note
  // bumps the account's version: a catch-up never pushes two current entries for one account.
  void note_changed(std::uint32_t a);
  // A waterfall holds back the notes of an account it cannot take as a winner while it runs
  // (its executor for the whole step, the account it is liquidating during that liquidation):
  // one note on release instead of one per fill, in every market the account holds. While
  // held, the account's entries may not match its positions; the waterfall never uses them
  // (both accounts are excluded from the winners).
  bool notes_held(std::uint32_t a);
  void hold_notes(int which, std::uint32_t a);
  void release_notes(int which);
  void bump_version(std::uint32_t a);
  std::uint32_t account_version(std::uint32_t a) const { return a < account_version_.size() ? account_version_[a] : 0; }
  bool adl_entry_current(const detail::AdlEntry& e) const { return e.version == account_version(e.account); }
  // The queues' order (its ties read the book's ids: take a new one after accounts are created).
  detail::AdlEntryAfter adl_order() const { return detail::AdlEntryAfter{book_.ids().data()}; }
  void log_change(std::uint32_t a);
  void drop_adl_queues();
  // Whether account a holds a position in m on `side` (+1 long, -1 short): a queue entry
  // counts only while it does.
  bool holds_side(std::uint32_t a, MarketId m, int side) const;
  // `liquidatable` (optional): set to whether account a is (equity < maintenance, same terms).
  i64 adl_score(std::uint32_t a, std::uint32_t slot, Ranking ranking, bool* liquidatable = nullptr) const;
  // Account a's equity and maintenance (money) from its cached sums; ArithmeticOverflow
  // naming the account if either leaves int64.
  std::pair<i64, i64> equity_and_maintenance(std::uint32_t a) const;
  // `only_position`: the account holds no other position (its maintenance is this one's).
  i64 adl_score(std::uint32_t slot, Ranking ranking, i64 balance, i64 equity, i64 maintenance,
                bool only_position = false) const;
  i64 executor_price(const MarketState& mk, i64 size, const ExecutorSpec& ex) const;

 private:
  // After a snapshot's sections are read: checks every position and rebuilds the derived
  // state (holder lists, size bounds, cached sums); then conservation and zero net size.
  void rebuild_after_load();
  void apply_trade(std::uint32_t buyer, std::uint32_t seller, MarketId m, i64 size, i64 value);
  // The rows of a bulk load, validated and in account order (trading.cpp, load_rows).
  struct LoadRows {
    std::vector<std::uint32_t> first;  // account a's rows are [first[a], first[a + 1])
    column<std::uint32_t> input_row;   // each row's index in the caller's arrays (for messages)
    column<MarketId> market;
    column<i64> size, entry;                // lots; entry notional (money)
    std::vector<i128> net_size, net_entry;  // per market
  };
  LoadRows load_rows(std::span<const i64> accounts, std::span<const MarketId> markets, std::span<const i64> sizes,
                     std::span<const i64> entry_prices) const;
  void require_new_pairs(const LoadRows& rows, std::span<const i64> accounts, std::span<const MarketId> markets) const;
  void require_loaded_representable(const LoadRows& rows, std::uint32_t cp,
                                    const std::vector<std::pair<MarketId, std::pair<i64, i64>>>& cp_positions) const;
  void validate_trade(i64 buyer, i64 seller, MarketId m, i64 size, i64 price, std::size_t row, std::uint32_t* a_buyer,
                      std::uint32_t* a_seller) const;

  MarginReport report_for(const std::vector<std::uint32_t>& accounts) const;
  // Runs a margin check; if it throws, every cache and valued mark is put back (atomicity).
  template <class Fn>
  void atomic_check(Fn&& check);
  // Brings the cached sums to the current marks; returns the accounts exposed to a revalued
  // market (sorted) unless `collect` is false (callers that only need the caches current).
  std::vector<std::uint32_t> revalue_moved_markets(const std::vector<std::uint8_t>& requested,
                                                   MarginReport* full_out = nullptr, bool* used_full_pass = nullptr,
                                                   bool collect = true);
  // Recomputes every account's cached sums; fills `out` (every column) or `step` when given.
  void revalue_all(const MarginColumns* out, StepMargins* step = nullptr);
  static MarginColumns columns_of(MarginReport& r);
  // Brings the caches to the current marks for a waterfall step. When that takes a full pass,
  // the pass also fills `step` and this returns true.
  bool revalue_for_step(StepMargins& step);
  void prefetch_account(std::uint32_t a) const;
  void prefetch_block(std::uint32_t a) const;
  void prefetch_pair(std::uint32_t a, std::uint32_t b) const;  // both accounts' hot data

  int threads_;
  MarketTable markets_;  // specs, marks, pools and the value scale (market_table.hpp)

  detail::Book book_;  // accounts, positions, holder lists (book.hpp)

  // Upper bounds on |equity|, maintenance and initial margin (money units) over every account
  // holding a position, at the current marks. Every state change that must keep an account in
  // the representable range calls representable(), which raises them; set_marks widens them by
  // the most its move can change an account. While they stay inside int64, set_marks needs no
  // pass over the moved markets' holders (docs/semantics.md, "Representable range"). Derived
  // state: not saved, not hashed, and never changes a result, only whether a check is needed.
  mutable detail::RelaxedMax bound_equity_, bound_maintenance_, bound_initial_;

  Flows flows_;
  InsuranceFund insurance_;
  i64 step_ = 0;
  EventSink* event_sink_ = nullptr;  // not owned, and copied with the engine; see set_event_sink
  // Not copied: a copy of a journaled engine must not write into the original's journal.
  struct RecorderSlot {
    Recorder* ptr = nullptr;
    RecorderSlot() = default;
    RecorderSlot(const RecorderSlot&) {}
    RecorderSlot& operator=(const RecorderSlot&) { return *this; }
  };
  RecorderSlot recorder_;

  // Kept ADL queues and what makes them stale: not part of the logical state (a queue is
  // rebuilt from the state on demand), so neither hashed nor saved.
  static constexpr std::size_t kChangeLogCap = std::size_t{1} << 16;
  std::vector<detail::KeptAdlQueue> adl_queues_;  // index 2 * market + (side > 0)
  struct ChangeLog {
    std::vector<std::uint32_t> accounts;  // accounts changed since `base` (may repeat)
    std::uint64_t base = 0;               // absolute index of accounts[0]
  };
  ChangeLog changes_;
  detail::AdlCatchUp catch_up_;
  std::vector<std::uint32_t> account_version_;  // changes noted per account (missing: 0)
  detail::AdlEntries refresh_scratch_;          // reused by refresh_adl_queues
  struct HeldNotes {
    std::uint32_t account = AccountIndex::kNone;
    bool pending = false;
  };
  HeldNotes held_notes_[2];        // [0]: a waterfall's executor, [1]: the account it is liquidating
  bool track_changes_ = false;     // on once a queue exists
  std::uint64_t marks_epoch_ = 0;  // mark changes so far (any market)
  AdlRefresh adl_refresh_ = AdlRefresh::Exact;
  i64 adl_refresh_every_ = 1;
  // Scratch flags of a waterfall call, one byte per account, all zero between calls (a call
  // clears what it set), so that a per-account call does not touch every account.
  std::vector<std::uint8_t> wf_flags_;
};

// An account's margin from its balance and cached sums (hot: inline).
inline AccountMargin Engine::margin_from_sums(i64 balance, const Sums& s) const {
  AccountMargin r;
  const i128 u = markets_.scale() == 1 ? s.u : markets_.div_s().floor(s.u);
  r.equity = to_i64_checked(static_cast<i128>(balance) + u, "equity");
  r.maintenance = to_i64_checked(markets_.div_sr().ceil(s.mm), "maintenance margin");
  r.initial = to_i64_checked(markets_.div_sr().ceil(s.im), "initial margin");
  r.liquidatable = r.equity < r.maintenance;
  r.bankrupt = r.equity < 0;
  return r;
}

// (hot: every fee, fund payment, credit and haircut of a waterfall step)
inline void Engine::add_to_balance(std::uint32_t a, i64 delta) {
  i64 after;
  if (__builtin_add_overflow(book_.hot()[a].balance, delta, &after)) [[unlikely]]
    throw_balance_overflow(a);
  book_.undo_log().save_balance(a, book_.hot()[a].balance);
  book_.hot()[a].balance = after;
}

// The kept queues' change notes (hot: every fill and balance change calls note_changed).
inline void Engine::note_changed(std::uint32_t a) {
  if (!track_changes_) return;
  if (notes_held(a)) return;
  bump_version(a);
  log_change(a);
}

inline bool Engine::notes_held(std::uint32_t a) {
  for (HeldNotes& h : held_notes_)
    if (h.account == a) {
      h.pending = true;
      return true;
    }
  return false;
}

inline void Engine::hold_notes(int which, std::uint32_t a) {
  release_notes(which);
  held_notes_[which] = HeldNotes{a, false};
}

inline void Engine::release_notes(int which) {
  const HeldNotes h = held_notes_[which];
  held_notes_[which] = HeldNotes{};
  if (h.pending) note_changed(h.account);
}

inline void Engine::bump_version(std::uint32_t a) {
  if (account_version_.size() <= a) account_version_.resize(book_.ids().size() > a ? book_.ids().size() : a + 1, 0);
  if (++account_version_[a] == 0) drop_adl_queues();  // after 2^32 changes an old version could repeat
}

inline void Engine::log_change(std::uint32_t a) {
  // Forget the older half past the cap (queues behind it rebuild); the cap grows with the
  // accounts, since catching up a log longer than that costs about a rebuild anyway.
  const std::size_t cap = std::max(kChangeLogCap, book_.ids().size());
  if (changes_.accounts.size() >= cap) {
    changes_.accounts.erase(changes_.accounts.begin(),
                            changes_.accounts.begin() + static_cast<std::ptrdiff_t>(cap / 2));
    changes_.base += cap / 2;
  }
  changes_.accounts.push_back(a);
}

inline bool Engine::holds_side(std::uint32_t a, MarketId m, int side) const {
  const std::uint32_t s = find_slot(a, m);
  return s != kNoSlot && (book_.sizes()[s] > 0) == (side > 0);
}

// Every account's balance (money units), in creation order: engine.balances().
std::vector<i64> account_balances(const Engine& engine);

}  // namespace deleverage
