// Maps the core's exception types to the Python hierarchy in deleverage.errors.
#include <pybind11/pybind11.h>

#include "deleverage/errors.hpp"

namespace py = pybind11;

namespace deleverage::bindings {

void register_errors(py::module_& m) {
  (void)m;
  py::register_exception_translator([](std::exception_ptr p) {
    if (!p) return;
    auto raise = [](const char* name, const std::exception& e) {
      py::object cls = py::module_::import("deleverage.errors").attr(name);
      PyErr_SetString(cls.ptr(), e.what());
    };
    try {
      std::rethrow_exception(p);
    } catch (const ConfigError& e) {
      raise("ConfigError", e);
    } catch (const InvalidInput& e) {
      raise("InvalidInput", e);
    } catch (const ArithmeticOverflow& e) {
      raise("ArithmeticOverflow", e);
    } catch (const UnknownId& e) {
      raise("UnknownId", e);
    } catch (const InsufficientMargin& e) {
      raise("InsufficientMargin", e);
    } catch (const CorruptSnapshot& e) {
      raise("CorruptSnapshot", e);
    } catch (const InvariantViolation& e) {
      raise("InvariantViolation", e);
    } catch (const Error& e) {
      raise("DeleverageError", e);
    }
  });
}

}  // namespace deleverage::bindings
