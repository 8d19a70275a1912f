// The whole C++ embedding API in one include: the Engine (state, trades, margin checks, the
// loss waterfall, single ADL fills), the allocation kernels of the policy lab, and the
// exception types. Link the static library with CMake:
//
//   find_package(deleverage REQUIRED)
//   target_link_libraries(app PRIVATE deleverage::core)
//
// Headers, one area each:
//   engine.hpp       Engine: accounts, positions, marks, margin checks, waterfall (main entry)
//   commands.hpp     one command type per state-changing call, Engine::apply, the Recorder hook
//   market.hpp       MarketSpec, TierSpec: decimals, margin rates, tier tables
//   waterfall.hpp    WaterfallConfig / WaterfallResult of Engine::liquidate, ADL indicator
//   insurance.hpp    InsuranceFund: pools, ledger, drawdown rule (owned by the Engine)
//   policy.hpp       Policy: the last-resort policies and their one name table
//   allocate.hpp     allocate(): split a budget over winners under a policy (exact or float)
//   water_fill.hpp   allocate_capped_pro_rata(): the waterfall's exact water-filling
//   fixed_point.hpp  i64 / i128 money arithmetic helpers and constants (kRateScale)
//   errors.hpp       the exception hierarchy (deleverage::Error and subclasses)
//   snapshot.hpp     save/load of the whole state (versioned, checksummed, atomic), state_hash
//   journal.hpp      the journal (a Recorder of commands) and its replay
//   stress.hpp       run_stress(): waterfall steps along price paths, in parallel
//   book.hpp, market_table.hpp, undo_log.hpp  the Engine's position store, its undo log and the
//                    market table (internal parts)
//   account_index.hpp, detail/  internals the headers above need; not for direct use
//
// Units, rounding and atomicity: see engine.hpp and docs/semantics.md. Threads:
// docs/threading.md. The hot single-account calls (trade, account_margin, adl_fill)
// allocate nothing after warm-up (cpp/tests/test_no_alloc.cpp).
#pragma once

#include "deleverage/allocate.hpp"
#include "deleverage/commands.hpp"
#include "deleverage/engine.hpp"
#include "deleverage/errors.hpp"
#include "deleverage/fixed_point.hpp"
#include "deleverage/insurance.hpp"
#include "deleverage/journal.hpp"
#include "deleverage/market.hpp"
#include "deleverage/policy.hpp"
#include "deleverage/snapshot.hpp"
#include "deleverage/stress.hpp"
#include "deleverage/water_fill.hpp"
#include "deleverage/waterfall.hpp"
