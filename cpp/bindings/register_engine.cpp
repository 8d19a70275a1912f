// Python binding of deleverage::Engine. Arguments are converted and checked while the GIL
// is held; the work runs with the GIL released under a per-engine mutex, so Python threads
// may call into one engine concurrently and are serialized here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <optional>
#include <type_traits>

#include "deleverage/detail/parallel.hpp"
#include "deleverage/commands.hpp"
#include "deleverage/engine.hpp"
#include "deleverage/detail/display.hpp"
#include "numpy_io.hpp"
#include "py_engine.hpp"
#include "report_pool.hpp"

namespace py = pybind11;

namespace deleverage::bindings {

namespace {

// A full report's account column: the shared read-only copy of the ids (refreshed when
// accounts were added) instead of an 8-byte-per-account copy every call. collect() runs
// under the engine's lock, column() after it, with the GIL.
struct IdsRefresh {
  std::vector<i64> fresh;
  bool refreshed = false;
  void collect(const PyEngine& s, Engine& e) {
    if (e.account_count() > s.ids_count) {
      fresh = e.account_ids();
      refreshed = true;
    }
  }
  py::object column(PyEngine& s, std::size_t n) {
    if (refreshed && fresh.size() >= s.ids_count) {
      const std::size_t count = fresh.size();
      py::array_t<i64> ids = to_numpy(std::move(fresh));
      ids.attr("flags").attr("writeable") = false;
      s.ids = ids;
      s.ids_count = count;
    }
    if (n == 0) return py::array_t<i64>(0);
    return s.ids.attr("__getitem__")(py::slice(0, static_cast<py::ssize_t>(n), 1));
  }
};

py::dict margin_report_to_dict(MarginReport&& r) {
  py::dict d;
  d["account"] = to_numpy(std::move(r.account_id));
  d["equity"] = to_numpy(std::move(r.equity));
  d["maintenance"] = to_numpy(std::move(r.maintenance));
  d["initial"] = to_numpy(std::move(r.initial));
  d["liquidatable"] = to_numpy_bool(std::move(r.liquidatable));
  d["bankrupt"] = to_numpy_bool(std::move(r.bankrupt));
  return d;
}
}  // namespace

void register_waterfall(py::module_& m, py::class_<PyEngine>& cls);
void register_durability(py::module_& m, py::class_<PyEngine>& cls);

namespace {
// Module functions converting exact columns to floats for display (floats live only here).
void register_float_columns(py::module_& m) {
  m.def(
      "margin_ratio",
      [](const py::array& equity, const py::array& maintenance) {
        auto e = as_span<i64>(equity, "equity");
        auto mm = as_span<i64>(maintenance, "maintenance");
        if (e.size() != mm.size()) throw InvalidInput("maintenance has a different length than equity");
        column<double> out(e.size());
        {
          // maintenance / equity for display (floats live only here, at the boundary):
          // +inf when equity <= 0 and something is owed, 0 for an empty account
          py::gil_scoped_release release;
          const int threads = static_cast<int>(std::thread::hardware_concurrency());
          detail::parallel_for(out.size(), threads, 1 << 16, [&](std::size_t b, std::size_t end) {
            for (std::size_t i = b; i < end; ++i) out[i] = detail::margin_ratio(e[i], mm[i]);
          });
        }
        return to_numpy(std::move(out));
      },
      py::arg("equity"), py::arg("maintenance"),
      "maintenance / equity per account (float64), from exact int64 values.");
  m.def(
      "margin_floats",
      [](const py::array& equity, const py::array& maintenance, const py::array& initial, int decimals) {
        // One pass for a float-mode report: the three money columns in quote currency and the
        // margin ratio from the exact values, so the int64 columns need not be kept.
        auto e = as_span<i64>(equity, "equity");
        auto mm = as_span<i64>(maintenance, "maintenance");
        auto im = as_span<i64>(initial, "initial");
        if (e.size() != mm.size() || e.size() != im.size()) throw InvalidInput("columns of different lengths");
        if (decimals < 0 || decimals > 22) throw InvalidInput("decimals must be between 0 and 22");
        const double p = detail::kPow10Double[decimals];
        column<double> ef(e.size()), mf(e.size()), inf_(e.size()), ratio(e.size());
        {
          py::gil_scoped_release release;
          const int threads = static_cast<int>(std::thread::hardware_concurrency());
          detail::parallel_for(e.size(), threads, 1 << 16, [&](std::size_t b, std::size_t end) {
            for (std::size_t i = b; i < end; ++i) {
              ef[i] = static_cast<double>(e[i]) / p;
              mf[i] = static_cast<double>(mm[i]) / p;
              inf_[i] = static_cast<double>(im[i]) / p;
              ratio[i] = detail::margin_ratio(e[i], mm[i]);
            }
          });
        }
        return py::make_tuple(to_numpy(std::move(ef)), to_numpy(std::move(mf)), to_numpy(std::move(inf_)),
                              to_numpy(std::move(ratio)));
      },
      py::arg("equity"), py::arg("maintenance"), py::arg("initial"), py::arg("decimals"));
}

// Construction, copies, sizes and markets.
void register_state(py::class_<PyEngine>& cls) {
  cls.def(py::init<int, int>(), py::arg("money_decimals") = 6, py::arg("threads") = 0)
      .def(
          "copy",
          [](PyEngine& s) {
            std::unique_ptr<PyEngine> out;
            locked(s, [&](Engine& e) { out = std::make_unique<PyEngine>(e); });
            return out;
          },
          "A deep copy of the whole state (accounts, positions, marks, fund, ledger, step).")
      .def_property_readonly("money_decimals", [](PyEngine& s) { return s.engine.money_decimals(); })
      .def_property_readonly("account_count",
                             [](PyEngine& s) { return locked(s, [](Engine& e) { return e.account_count(); }); })
      .def_property_readonly("position_count",
                             [](PyEngine& s) { return locked(s, [](Engine& e) { return e.position_count(); }); })
      .def_property_readonly("market_count",
                             [](PyEngine& s) { return locked(s, [](Engine& e) { return e.market_count(); }); })
      .def_property_readonly("memory_bytes",
                             [](PyEngine& s) { return locked(s, [](Engine& e) { return e.memory_bytes(); }); })
      .def(
          "add_market",
          [](PyEngine& s, const std::string& symbol, int qty_decimals, int price_decimals, i64 mmr, i64 imr, i64 fee,
             const std::vector<std::tuple<i64, i64, i64, i64>>& tiers, int mark_decimals) {
            MarketSpec spec;
            spec.mark_decimals = mark_decimals;
            spec.symbol = symbol;
            spec.qty_decimals = qty_decimals;
            spec.price_decimals = price_decimals;
            spec.maintenance_rate = mmr;
            spec.initial_rate = imr;
            spec.liquidation_fee_rate = fee;
            for (const auto& [cap, t_mmr, t_imr, amount] : tiers)
              spec.tiers.push_back(TierSpec{cap, t_mmr, t_imr, amount});
            return locked(s, [&](Engine& e) { return e.apply(commands::AddMarket{spec}); });
          },
          py::arg("symbol"), py::arg("qty_decimals"), py::arg("price_decimals"), py::arg("maintenance_rate"),
          py::arg("initial_rate"), py::arg("liquidation_fee_rate"), py::arg("tiers"), py::arg("mark_decimals") = -1)
      .def("market_info", [](PyEngine& s, MarketId m) {
        std::lock_guard<std::mutex> lock(s.mutex);
        const MarketSpec& spec = s.engine.market_spec(m);
        py::dict d;
        d["symbol"] = spec.symbol;
        d["qty_decimals"] = spec.qty_decimals;
        d["price_decimals"] = spec.price_decimals;
        d["mark_decimals"] = spec.mark_decimals;
        d["liquidation_fee_rate"] = spec.liquidation_fee_rate;
        d["mark"] = s.engine.mark(m);
        py::list tiers;
        for (const Tier& t : s.engine.market_tiers(m))
          tiers.append(py::make_tuple(t.max_notional, t.maintenance_rate, t.initial_rate,
                                      to_py_int(t.maintenance_deduction), to_py_int(t.initial_deduction)));
        d["tiers"] = tiers;
        return d;
      });
}

// State changes that are commands (commands.hpp): money, positions, trades, marks.
void register_trading(py::class_<PyEngine>& cls) {
  cls.def("deposit",
          [](PyEngine& s, const py::array& accounts, const py::array& amounts) {
            auto a = as_span<i64>(accounts, "accounts");
            auto v = as_span<i64>(amounts, "amounts");
            locked(s, [&](Engine& e) { e.apply(commands::Deposit{a, v}); });
          })
      .def("load_balances",
           [](PyEngine& s, const py::array& accounts, const py::array& balances) {
             auto a = as_span<i64>(accounts, "accounts");
             auto v = as_span<i64>(balances, "balances");
             locked(s, [&](Engine& e) { e.apply(commands::LoadBalances{a, v}); });
           })
      .def("withdraw",
           [](PyEngine& s, const py::array& accounts, const py::array& amounts) {
             auto a = as_span<i64>(accounts, "accounts");
             auto v = as_span<i64>(amounts, "amounts");
             locked(s, [&](Engine& e) { e.apply(commands::Withdraw{a, v}); });
           })
      .def(
          "load_positions",
          [](PyEngine& s, const py::array& accounts, const py::array& markets, const py::array& sizes,
             const py::array& entry_prices, std::optional<i64> counterparty) {
            auto a = as_span<i64>(accounts, "accounts");
            auto mk = as_span<MarketId>(markets, "markets");
            auto q = as_span<i64>(sizes, "sizes");
            auto p = as_span<i64>(entry_prices, "entry_prices");
            locked(s, [&](Engine& e) { e.apply(commands::LoadPositions{a, mk, q, p, counterparty}); });
          },
          py::arg("accounts"), py::arg("markets"), py::arg("sizes"), py::arg("entry_prices"),
          py::arg("counterparty") = py::none())
      .def("trade",
           [](PyEngine& s, i64 buyer, i64 seller, MarketId market, i64 size, i64 price) {
             locked(s, [&](Engine& e) { e.apply(commands::Trade{buyer, seller, market, size, price}); });
           })
      .def("trades",
           [](PyEngine& s, const py::array& buyers, const py::array& sellers, const py::array& markets,
              const py::array& sizes, const py::array& prices) {
             auto b = as_span<i64>(buyers, "buyers");
             auto se = as_span<i64>(sellers, "sellers");
             auto mk = as_span<MarketId>(markets, "markets");
             auto q = as_span<i64>(sizes, "sizes");
             auto p = as_span<i64>(prices, "prices");
             locked(s, [&](Engine& e) { e.apply(commands::Trades{b, se, mk, q, p}); });
           })
      .def("set_marks", [](PyEngine& s, const py::array& markets, const py::array& prices) {
        auto mk = as_span<MarketId>(markets, "markets");
        auto p = as_span<i64>(prices, "prices");
        locked(s, [&](Engine& e) { e.apply(commands::SetMarks{mk, p}); });
      });
}

// The full check into columns from the report pool (report_pool.hpp): int64 money units
// (Money = i64), or float64 quote currency with the margin ratio written in the same pass
// (Money = double).
template <class Money>
py::dict pooled_full_report(PyEngine& s) {
  constexpr bool quote = std::is_same_v<Money, double>;
  std::optional<PooledColumn<Money>> equity, maintenance, initial;
  std::optional<PooledColumn<double>> ratio;
  std::optional<PooledColumn<std::uint8_t>> liquidatable, bankrupt;
  IdsRefresh ids;
  std::size_t n = 0;
  locked(s, [&](Engine& e) {
    n = e.account_count();
    for (auto* c : {&equity, &maintenance, &initial}) c->emplace(n);
    liquidatable.emplace(n);
    bankrupt.emplace(n);
    MarginColumns out;
    if constexpr (quote) {
      ratio.emplace(n);
      out.equity_quote = equity->data();
      out.maintenance_quote = maintenance->data();
      out.initial_quote = initial->data();
      out.margin_ratio = ratio->data();
    } else {
      out.equity = equity->data();
      out.maintenance = maintenance->data();
      out.initial = initial->data();
    }
    out.liquidatable = liquidatable->data();
    out.bankrupt = bankrupt->data();
    e.apply(commands::CheckMargin{commands::CheckMargin::Output::Into, &out});
    ids.collect(s, e);
  });
  py::dict d;
  d["account"] = ids.column(s, n);
  d["equity"] = equity->to_numpy();
  d["maintenance"] = maintenance->to_numpy();
  d["initial"] = initial->to_numpy();
  if (quote) d["margin_ratio"] = ratio->to_numpy();
  d["liquidatable"] = liquidatable->to_numpy(true);
  d["bankrupt"] = bankrupt->to_numpy(true);
  return d;
}

// Margin checks and position reports.
void register_margin(py::class_<PyEngine>& cls) {
  cls.def(
         "check_margin",
         [](PyEngine& s, std::optional<py::array> markets) {
           if (markets) {
             auto mk = as_span<MarketId>(*markets, "markets");
             MarginReport r = locked(s, [&](Engine& e) { return e.apply(commands::CheckMarginMoved{mk}); });
             return margin_report_to_dict(std::move(r));
           }
           return pooled_full_report<i64>(s);
         },
         py::arg("markets") = py::none())
      .def("check_margin_quote", [](PyEngine& s) { return pooled_full_report<double>(s); })
      .def(
          "check_margin_into",
          [](PyEngine& s, const py::array& equity, const py::array& maintenance, const py::array& initial,
             const py::array& liquidatable, const py::array& bankrupt, std::optional<py::array> margin_ratio) {
            // the full check written into the caller's arrays: int64 money units, or float64
            // quote currency when margin_ratio is given (then also written)
            const std::size_t n = locked(s, [](Engine& e) { return e.account_count(); });
            MarginColumns out;
            if (margin_ratio) {
              out.equity_quote = as_output<double>(equity, "out.equity", n);
              out.maintenance_quote = as_output<double>(maintenance, "out.maintenance", n);
              out.initial_quote = as_output<double>(initial, "out.initial", n);
              out.margin_ratio = as_output<double>(*margin_ratio, "out.margin_ratio", n);
            } else {
              out.equity = as_output<i64>(equity, "out.equity", n);
              out.maintenance = as_output<i64>(maintenance, "out.maintenance", n);
              out.initial = as_output<i64>(initial, "out.initial", n);
            }
            out.liquidatable = as_output<std::uint8_t>(liquidatable, "out.liquidatable", n);
            out.bankrupt = as_output<std::uint8_t>(bankrupt, "out.bankrupt", n);
            locked(s, [&](Engine& e) {
              if (e.account_count() != n) throw InvalidInput("out: the exchange gained accounts during the call");
              e.apply(commands::CheckMargin{commands::CheckMargin::Output::Into, &out});
            });
          },
          py::arg("equity"), py::arg("maintenance"), py::arg("initial"), py::arg("liquidatable"), py::arg("bankrupt"),
          py::arg("margin_ratio") = py::none())
      .def("account_margin",
           [](PyEngine& s, i64 account) {
             AccountMargin a = locked(s, [&](Engine& e) { return e.account_margin(account); });
             return py::make_tuple(a.equity, a.maintenance, a.initial, a.liquidatable, a.bankrupt);
           })
      .def(
          "positions",
          [](PyEngine& s, DeficitSplit split) {
            PositionReport r = locked(s, [&](Engine& e) { return e.positions(split); });
            py::dict d;
            d["account"] = to_numpy(std::move(r.account_id));
            d["market"] = to_numpy(std::move(r.market));
            d["size"] = to_numpy(std::move(r.size));
            d["entry_notional"] = to_numpy(std::move(r.entry_notional));
            d["unrealized_pnl"] = to_numpy(std::move(r.unrealized_pnl));
            d["liquidation_price"] = to_numpy(std::move(r.liquidation_price));
            d["bankruptcy_price"] = to_numpy(std::move(r.bankruptcy_price));
            return d;
          },
          py::arg("deficit_split") = DeficitSplit::Loss);
}

// Read-only inspection and the invariant check.
void register_inspection(py::class_<PyEngine>& cls) {
  cls.def("balance", [](PyEngine& s, i64 account) { return locked(s, [&](Engine& e) { return e.balance(account); }); })
      .def("has_account",
           [](PyEngine& s, i64 account) { return locked(s, [&](Engine& e) { return e.has_account(account); }); })
      .def("mark", [](PyEngine& s, MarketId m) { return locked(s, [&](Engine& e) { return e.mark(m); }); })
      .def("net_size",
           [](PyEngine& s, MarketId m) { return to_py_int(locked(s, [&](Engine& e) { return e.net_size(m); })); })
      .def("account_ids",
           [](PyEngine& s) {
             std::vector<i64> ids = locked(s, [&](Engine& e) { return e.account_ids(); });
             return to_numpy(std::move(ids));
           })
      .def("flows",
           [](PyEngine& s) {
             Flows f = locked(s, [&](Engine& e) { return e.flows(); });
             py::dict d;
             d["deposits"] = to_py_int(f.deposits);
             d["withdrawals"] = to_py_int(f.withdrawals);
             d["loaded_entry_notional"] = to_py_int(f.loaded_entry_notional);
             d["loaded_balances"] = to_py_int(f.loaded_balances);
             return d;
           })
      .def("check_invariants", [](PyEngine& s) { locked(s, [&](Engine& e) { e.check_invariants(); }); });
}

}  // namespace

void register_engine(py::module_& m) {
  register_float_columns(m);
  py::class_<PyEngine> cls(m, "Engine", "The compiled exchange state. Use deleverage.Exchange, which wraps it.");
  register_waterfall(m, cls);
  register_durability(m, cls);
  register_state(cls);
  register_trading(cls);
  register_margin(cls);
  register_inspection(cls);
}

}  // namespace deleverage::bindings
