// Python binding of the waterfall, the insurance fund and the ADL indicator.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "deleverage/commands.hpp"
#include "deleverage/engine.hpp"
#include "numpy_io.hpp"
#include "py_engine.hpp"

namespace py = pybind11;

namespace deleverage::bindings {

namespace {
// A step's result as the binding returns it: (events, totals, skipped), engine units.
py::tuple result_to_python(WaterfallResult&& r) {
  py::dict ev;
  ev["step"] = to_numpy(std::move(r.events.step));
  ev["kind"] = to_numpy(std::move(r.events.kind));
  ev["account"] = to_numpy(std::move(r.events.account));
  ev["market"] = to_numpy(std::move(r.events.market));
  ev["counterparty"] = to_numpy(std::move(r.events.counterparty));
  ev["size"] = to_numpy(std::move(r.events.size));
  ev["amount"] = to_numpy(std::move(r.events.amount));
  ev["price"] = to_numpy(std::move(r.events.price));
  ev["pool"] = to_numpy(std::move(r.events.pool));
  ev["exec_price"] = to_numpy(std::move(r.events.exec_price));
  const WaterfallTotals& t = r.totals;
  py::dict tot;
  tot["step"] = t.step;
  tot["liquidated_accounts"] = t.liquidated_accounts;
  tot["partial_liquidations"] = t.partial_liquidations;
  tot["deficit"] = to_py_int(t.deficit);
  tot["fund_used"] = to_py_int(t.fund_used);
  tot["fund_fees"] = to_py_int(t.fund_fees);
  tot["adl_notional"] = to_py_int(t.adl_notional);
  tot["adl_closes"] = t.adl_closes;
  tot["haircut_total"] = to_py_int(t.haircut_total);
  tot["accounts_touched"] = t.accounts_touched;
  tot["bad_debt"] = to_py_int(t.bad_debt);
  tot["last_resort_needed"] = to_py_int(t.last_resort_needed);
  tot["last_resort_planned"] = to_py_int(t.last_resort_planned);
  return py::make_tuple(ev, tot, to_numpy(std::move(r.skipped)));
}

// The insurance fund: pools, deposits, the drawdown rule, the ledger and the balance history.
void register_insurance(py::class_<PyEngine>& cls) {
  cls.def("give_market_own_pool",
          [](PyEngine& s, MarketId market) {
            return locked(s, [&](Engine& e) { return e.apply(commands::GiveMarketOwnPool{market}); });
          })
      .def("market_pool",
           [](PyEngine& s, MarketId market) { return locked(s, [&](Engine& e) { return e.market_pool(market); }); })
      .def("insurance_deposit",
           [](PyEngine& s, i64 amount, int pool) {
             locked(s, [&](Engine& e) { e.apply(commands::InsuranceDeposit{amount, pool}); });
           })
      .def("insurance_balance",
           [](PyEngine& s, int pool) {
             return locked(s, [&](Engine& e) {
               if (pool < 0 || pool >= e.insurance().pool_count())
                 throw UnknownId("pool: unknown insurance pool " + std::to_string(pool));
               return e.insurance().balance(pool);
             });
           })
      .def("insurance_pool_count",
           [](PyEngine& s) { return locked(s, [&](Engine& e) { return e.insurance().pool_count(); }); })
      .def("set_drawdown_rule",
           [](PyEngine& s, i64 max_drawdown, int window) {
             locked(s, [&](Engine& e) { e.apply(commands::SetDrawdownRule{max_drawdown, window}); });
           })
      .def("insurance_ledger",
           [](PyEngine& s) {
             std::vector<LedgerEntry> l = locked(s, [&](Engine& e) { return e.insurance().ledger(); });
             std::vector<i64> step, account, amount;
             std::vector<std::int32_t> pool, market;
             std::vector<std::uint8_t> reason;
             for (const LedgerEntry& x : l) {
               step.push_back(x.step);
               pool.push_back(x.pool);
               market.push_back(x.market);
               account.push_back(x.account);
               amount.push_back(x.amount);
               reason.push_back(static_cast<std::uint8_t>(x.reason));
             }
             py::dict d;
             d["step"] = to_numpy(std::move(step));
             d["pool"] = to_numpy(std::move(pool));
             d["market"] = to_numpy(std::move(market));
             d["account"] = to_numpy(std::move(account));
             d["amount"] = to_numpy(std::move(amount));
             d["reason"] = to_numpy(std::move(reason));
             return d;
           })
      .def("insurance_history", [](PyEngine& s) {
        auto h = locked(s, [&](Engine& e) { return e.insurance().history(); });
        std::vector<i64> step, balance;
        std::vector<std::int32_t> pool;
        for (const auto& x : h) {
          step.push_back(x.step);
          pool.push_back(x.pool);
          balance.push_back(x.balance);
        }
        py::dict d;
        d["step"] = to_numpy(std::move(step));
        d["pool"] = to_numpy(std::move(pool));
        d["balance"] = to_numpy(std::move(balance));
        return d;
      });
}

}  // namespace

void register_waterfall(py::module_& m, py::class_<PyEngine>& cls) {
  cls.def(
         "liquidate",
         [](PyEngine& s, const WaterfallConfig& c, const py::object& accounts) {
           WaterfallResult r;
           if (accounts.is_none()) {
             r = locked(s, [&](Engine& e) { return e.apply(commands::Liquidate{c}); });
           } else {
             const py::array arr = accounts.cast<py::array>();
             const std::span<const i64> ids = as_span<i64>(arr, "accounts");
             r = locked(s, [&](Engine& e) { return e.apply(commands::LiquidateAccounts{c, ids}); });
           }
           return result_to_python(std::move(r));
         },
         py::arg("config"), py::arg("accounts") = py::none(),
         "One waterfall step (every liquidatable account, or `accounts` in order); returns (events, totals, "
         "skipped) in engine units.")
      .def(
          "adl_ranking",
          [](PyEngine& s, MarketId market, Ranking rk, DeficitSplit split) {
            AdlRankingReport r = locked(s, [&](Engine& e) { return e.apply(commands::AdlRanking{market, rk, split}); });
            py::dict d;
            d["account"] = to_numpy(std::move(r.account));
            d["side"] = to_numpy(std::move(r.side));
            d["size"] = to_numpy(std::move(r.size));
            d["score"] = to_numpy(std::move(r.score));
            d["rank"] = to_numpy(std::move(r.rank));
            d["light"] = to_numpy(std::move(r.light));
            d["expected_loss"] = to_numpy(std::move(r.expected_loss));
            return d;
          },
          py::arg("market"), py::arg("ranking"), py::arg("deficit_split") = DeficitSplit::Loss)
      .def("adl_rank",
           [](PyEngine& s, i64 account, MarketId market, Ranking rk) {
             const AdlRank r =
                 locked(s, [&](Engine& e) { return e.apply(commands::AccountAdlRank{account, market, rk}); });
             return py::make_tuple(static_cast<int>(r.side), r.score, r.rank, r.side_count, static_cast<int>(r.light));
           })
      .def("set_adl_refresh",
           [](PyEngine& s, AdlRefresh p, i64 every) {
             locked(s, [&](Engine& e) { e.apply(commands::SetAdlRefresh{p, every}); });
           })
      .def("adl_refresh",
           [](PyEngine& s) {
             const auto r =
                 locked(s, [&](Engine& e) { return std::make_pair(e.adl_refresh(), e.adl_refresh_every()); });
             return py::make_tuple(r.first, r.second);
           })
      .def_property_readonly("step", [](PyEngine& s) { return locked(s, [&](Engine& e) { return e.step(); }); })
      .def("previous_mark",
           [](PyEngine& s, MarketId market) { return locked(s, [&](Engine& e) { return e.previous_mark(market); }); });
  (void)m;
  register_insurance(cls);
}

}  // namespace deleverage::bindings
