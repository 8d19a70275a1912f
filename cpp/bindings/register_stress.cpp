// Python binding of the stress path runner (deleverage/stress.hpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "deleverage/stress.hpp"
#include "deleverage/waterfall.hpp"
#include "numpy_io.hpp"
#include "py_engine.hpp"

namespace py = pybind11;

namespace deleverage::bindings {

void register_stress(py::module_& m) {
  m.def(
      "run_stress",
      [](PyEngine& base, const WaterfallConfig& c, const py::array& marks, std::size_t paths, std::size_t steps,
         int threads) {
        auto mk = as_span<i64>(marks, "marks");
        // the base engine is only read (each path copies it); its mutex keeps Python threads out
        StressRun r = locked(base, [&](Engine& e) { return run_stress(e, c, mk, paths, steps, threads); });
        py::dict series;
        StressSeries& s = r.series;
        series["deficit"] = to_numpy(std::move(s.deficit));
        series["fund_used"] = to_numpy(std::move(s.fund_used));
        series["fund_fees"] = to_numpy(std::move(s.fund_fees));
        series["bad_debt"] = to_numpy(std::move(s.bad_debt));
        series["liquidated_accounts"] = to_numpy(std::move(s.liquidated_accounts));
        series["partial_liquidations"] = to_numpy(std::move(s.partial_liquidations));
        series["adl_notional"] = to_numpy(std::move(s.adl_notional));
        series["adl_closes"] = to_numpy(std::move(s.adl_closes));
        series["haircut_total"] = to_numpy(std::move(s.haircut_total));
        series["accounts_touched"] = to_numpy(std::move(s.accounts_touched));
        series["winner_loss"] = to_numpy(std::move(s.winner_loss));
        series["fund_balance"] = to_numpy(std::move(s.fund_balance));
        py::dict accounts;
        accounts["loss_total"] = to_numpy(std::move(r.accounts.loss_total));
        accounts["loss_max"] = to_numpy(std::move(r.accounts.loss_max));
        accounts["paths_hit"] = to_numpy(std::move(r.accounts.paths_hit));
        accounts["paths_liquidated"] = to_numpy(std::move(r.accounts.paths_liquidated));
        accounts["final_equity_min"] = to_numpy(std::move(r.accounts.final_equity_min));
        py::dict out;
        out["series"] = series;
        out["accounts"] = accounts;
        out["fund_start"] = to_numpy(std::move(r.fund_start));
        out["shape"] = py::make_tuple(s.paths, s.steps, s.pools);
        return out;
      },
      py::arg("engine"), py::arg("config"), py::arg("marks"), py::arg("paths"), py::arg("steps"),
      py::arg("threads") = 0,
      "Run `paths` stress paths of `steps` waterfall steps on copies of `engine`; marks: int64 ticks, flat "
      "[path][step][market]. Returns per-step series (flat [path][step], fund_balance [path][step][pool]) and "
      "per-account outcomes over all paths (money units).");
}

}  // namespace deleverage::bindings
