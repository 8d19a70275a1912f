// deleverage._core: the compiled engine. Each area registers itself from its own file.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace deleverage::bindings {
void register_errors(py::module_& m);
void register_engine(py::module_& m);
void register_bench(py::module_& m);
void register_convert(py::module_& m);
void register_allocate(py::module_& m);
void register_stress(py::module_& m);
void register_waterfall_config(py::module_& m);
}  // namespace deleverage::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "Compiled core of deleverage (integer fixed-point exchange state).";
  deleverage::bindings::register_errors(m);
  deleverage::bindings::register_waterfall_config(m);  // before the engine, whose methods take its types
  deleverage::bindings::register_engine(m);
  deleverage::bindings::register_bench(m);
  deleverage::bindings::register_convert(m);
  deleverage::bindings::register_allocate(m);
  deleverage::bindings::register_stress(m);
}
