// Python binding of the waterfall's configuration (WaterfallConfig, ExecutorSpec, RiskFunction)
// and its enums, as real types: the Python layer builds one WaterfallConfig and hands it to
// liquidate() and run_stress(). Enum members are named as the Python API spells the values
// ("close", "bitmex", "previous_mark", ...), so the Python name tables are read from them.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "deleverage/commands.hpp"
#include "deleverage/engine.hpp"
#include "deleverage/waterfall.hpp"

namespace py = pybind11;

namespace deleverage::bindings {

namespace {

std::string repr(const WaterfallConfig& c) {
  return "WaterfallConfig(executor=" +
         std::string(c.executor.kind == ExecutorKind::MarketClose ? "market_close" : "backstop") +
         ", account=" + std::to_string(c.executor.account) + ", policy=" + policy_name(c.policy) +
         ", mode=" + (c.mode == WaterfallMode::Close ? "close" : "haircut") + ", theta=" + std::to_string(c.theta) +
         ", cap=" + std::to_string(c.cap) + ", lot=" + std::to_string(c.lot) + ")";
}

}  // namespace

void register_waterfall_config(py::module_& m) {
  py::enum_<ExecutorKind>(m, "ExecutorKind", "Who closes a liquidated position.")
      .value("market_close", ExecutorKind::MarketClose)
      .value("backstop", ExecutorKind::Backstop);
  py::enum_<WaterfallMode>(m, "WaterfallMode", "What the last resort does: close positions or take haircuts.")
      .value("close", WaterfallMode::Close)
      .value("haircut", WaterfallMode::Haircut);
  py::enum_<Ranking>(m, "Ranking", "The ADL queue's ranking.")
      .value("bitmex", Ranking::BitMEX)
      .value("binance", Ranking::Binance)
      .value("hyperliquid", Ranking::Hyperliquid);
  py::enum_<AdlPrice>(m, "AdlPrice", "The price of ADL closes.")
      .value("bankruptcy", AdlPrice::Bankruptcy)
      .value("mark", AdlPrice::Mark)
      .value("previous_mark", AdlPrice::PreviousMark);
  py::enum_<DeficitSplit>(m, "DeficitSplit", "Where a bankrupt account's negative equity lands.")
      .value("loss", DeficitSplit::Loss)
      .value("maintenance", DeficitSplit::Maintenance);
  py::enum_<AdlRefresh>(m, "AdlRefresh", "When the kept ADL queues are re-scored.")
      .value("exact", AdlRefresh::Exact)
      .value("interval", AdlRefresh::Interval);
  py::enum_<Policy> policy(m, "Policy", "The last-resort policies (names: POLICY_NAMES).");
  for (int i = 0; i < kPolicyCount; ++i)
    policy.value(kPolicyNames[static_cast<std::size_t>(i)].data(), static_cast<Policy>(i));

  py::class_<RiskFunction> g(m, "RiskFunction", "risk_aware's g: linear, power:k or excess:l0.");
  py::enum_<RiskFunction::Kind>(g, "Kind")
      .value("linear", RiskFunction::Kind::Linear)
      .value("power", RiskFunction::Kind::Power)
      .value("excess", RiskFunction::Kind::Excess);
  g.def(py::init([](const std::string& spec) { return parse_risk_function(spec); }), py::arg("spec") = "linear",
        "Parses 'linear', 'power:k' or 'excess:l0' (InvalidInput otherwise).")
      .def_readonly("kind", &RiskFunction::kind)
      .def_readonly("param", &RiskFunction::param);

  py::class_<ExecutorSpec>(m, "ExecutorSpec", "Who closes the positions and at what price (rates in 1e-8).")
      .def(py::init(
               [](ExecutorKind kind, i64 account, i64 slippage_rate, i64 impact_rate, i64 impact_depth, bool partial) {
                 return ExecutorSpec{kind, account, slippage_rate, impact_rate, impact_depth, partial};
               }),
           py::kw_only(), py::arg("kind"), py::arg("account"), py::arg("slippage_rate") = 0, py::arg("impact_rate") = 0,
           py::arg("impact_depth") = 0, py::arg("partial") = false)
      .def_readwrite("kind", &ExecutorSpec::kind)
      .def_readwrite("account", &ExecutorSpec::account)
      .def_readwrite("slippage_rate", &ExecutorSpec::slippage_rate)
      .def_readwrite("impact_rate", &ExecutorSpec::impact_rate)
      .def_readwrite("impact_depth", &ExecutorSpec::impact_depth)
      .def_readwrite("partial", &ExecutorSpec::partial);

  py::class_<WaterfallConfig>(m, "WaterfallConfig",
                              "The engine's configuration of one waterfall step (docs/waterfall.md): integers in "
                              "engine units (rates and fractions in 1e-8, money in units). Range checks happen "
                              "when a step runs.")
      .def(
          py::init([](const ExecutorSpec& executor, WaterfallMode mode, Policy policy, Ranking ranking,
                      AdlPrice adl_price, i64 theta, i64 cap, i64 lot, const RiskFunction& g, std::uint64_t seed,
                      DeficitSplit deficit_split) {
            return WaterfallConfig{executor, mode, policy, ranking, adl_price, theta, cap, lot, g, seed, deficit_split};
          }),
          py::kw_only(), py::arg("executor"), py::arg("mode") = WaterfallMode::Close, py::arg("policy") = Policy::Queue,
          py::arg("ranking") = Ranking::BitMEX, py::arg("adl_price") = AdlPrice::Bankruptcy,
          py::arg("theta") = kThetaDeficit, py::arg("cap") = kRateScale, py::arg("lot") = 1,
          py::arg("g") = RiskFunction{}, py::arg("seed") = 0, py::arg("deficit_split") = DeficitSplit::Loss)
      .def_readwrite("executor", &WaterfallConfig::executor)
      .def_readwrite("mode", &WaterfallConfig::mode)
      .def_readwrite("policy", &WaterfallConfig::policy)
      .def_readwrite("ranking", &WaterfallConfig::ranking)
      .def_readwrite("adl_price", &WaterfallConfig::adl_price)
      .def_readwrite("theta", &WaterfallConfig::theta)
      .def_readwrite("cap", &WaterfallConfig::cap)
      .def_readwrite("lot", &WaterfallConfig::lot)
      .def_readwrite("g", &WaterfallConfig::g)
      .def_readwrite("seed", &WaterfallConfig::seed)
      .def_readwrite("deficit_split", &WaterfallConfig::deficit_split)
      .def("__repr__", &repr)
      // pickled as the journal's liquidate record holds it (the stress runner ships it to workers)
      .def(py::pickle(
          [](const WaterfallConfig& c) {
            const std::vector<std::byte> b = encode_waterfall_config(c);
            return py::bytes(reinterpret_cast<const char*>(b.data()), b.size());
          },
          [](const py::bytes& state) {
            const std::string s = state;
            return decode_waterfall_config(std::as_bytes(std::span(s.data(), s.size())));
          }));
}

}  // namespace deleverage::bindings
