// deleverage._core.allocate_exact / allocate_float: the policy lab's allocation kernel
// (cpp/include/deleverage/allocate.hpp). Strict dtypes, the GIL released while it runs,
// the result handed to numpy without a copy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "deleverage/allocate.hpp"
#include "numpy_io.hpp"

namespace py = pybind11;

namespace deleverage::bindings {

namespace {

template <class T>
py::array_t<T> run(const std::string& policy, T budget, const py::array& capacity,
                   const std::optional<py::array>& score, const std::optional<py::array>& leverage,
                   const std::optional<py::array>& cap, std::optional<T> lot, const std::string& g, std::uint64_t seed,
                   bool clip, const std::optional<py::array>& lots, const std::optional<py::array>& weights,
                   const std::optional<py::array>& base, int threads) {
  AllocRequest<T> req;
  req.policy = parse_policy(policy);
  req.budget = budget;
  req.capacity = as_span<T>(capacity, "capacity");
  if (score) req.score = as_span<double>(*score, "score");
  if (leverage) req.leverage = as_span<T>(*leverage, "leverage");
  if (cap) {
    req.cap = as_span<T>(*cap, "cap");
    if (req.cap.empty()) throw InvalidInput("cap: give one value or one per winner");
  }
  req.lot = lot;
  if (lots) req.lots = as_span<T>(*lots, "lot");
  if (weights) req.weights = as_span<T>(*weights, "weights");
  if (base) req.base = as_span<T>(*base, "base");
  req.g = parse_risk_function(g);
  req.seed = seed;
  req.clip = clip;
  req.threads = threads;
  std::vector<T> out;
  {
    py::gil_scoped_release release;
    out = allocate(req);
  }
  return to_numpy(std::move(out));
}

}  // namespace

void register_allocate(py::module_& m) {
  // The one policy name table (policy.hpp), by engine code; and the kernel's subset.
  py::list names, kernel_names;
  for (int i = 0; i < kPolicyCount; ++i) {
    names.append(std::string(kPolicyNames[static_cast<std::size_t>(i)]));
    if (is_kernel_policy(static_cast<Policy>(i)))
      kernel_names.append(std::string(kPolicyNames[static_cast<std::size_t>(i)]));
  }
  m.attr("POLICY_NAMES") = py::tuple(names);
  m.attr("KERNEL_POLICY_NAMES") = py::tuple(kernel_names);
  m.def("allocate_exact", &run<std::int64_t>, py::arg("policy"), py::arg("budget"), py::arg("capacity"),
        py::arg("score"), py::arg("leverage"), py::arg("cap"), py::arg("lot"), py::arg("g"), py::arg("seed"),
        py::arg("clip"), py::arg("lots") = py::none(), py::arg("weights") = py::none(), py::arg("base") = py::none(),
        py::arg("threads") = 0,
        "Exact allocation: int64 capacity/budget/lot, cap and leverage int64 in units of 1e-8; int64 amounts summing "
        "to the budget.");
  m.def("allocate_float", &run<double>, py::arg("policy"), py::arg("budget"), py::arg("capacity"), py::arg("score"),
        py::arg("leverage"), py::arg("cap"), py::arg("lot"), py::arg("g"), py::arg("seed"), py::arg("clip"),
        py::arg("lots") = py::none(), py::arg("weights") = py::none(), py::arg("base") = py::none(),
        py::arg("threads") = 0, "Float allocation: float64 everywhere; float64 amounts.");
  m.def("random_walk_start", &random_walk_start, py::arg("seed"), py::arg("n"),
        "The random walk's start index: splitmix64(seed) mod n.");
}

}  // namespace deleverage::bindings
