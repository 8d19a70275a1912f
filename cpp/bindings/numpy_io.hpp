// Strict numpy <-> C++ conversions for the bindings: inputs must already have the exact
// dtype (no silent float -> int casts); outputs hand a std::vector's buffer to numpy
// without copying it.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "deleverage/errors.hpp"
#include "deleverage/fixed_point.hpp"

namespace deleverage::bindings {
namespace py = pybind11;

// A 128-bit integer as a Python int (exact; for sums that may exceed int64).
inline py::int_ to_py_int(i128 v) {
  return py::reinterpret_steal<py::int_>(PyLong_FromString(to_string_i128(v).c_str(), nullptr, 10));
}

template <class T>
std::span<const T> as_span(const py::array& a, const char* field) {
  if (!py::isinstance<py::array_t<T>>(a) || a.dtype().kind() != py::dtype::of<T>().kind() ||
      a.dtype().itemsize() != static_cast<py::ssize_t>(sizeof(T)))
    throw InvalidInput(std::string(field) + ": expected a numpy array of dtype " +
                       std::string(py::str(py::dtype::of<T>())) + ", got " + std::string(py::str(a.dtype())));
  if (a.ndim() != 1) throw InvalidInput(std::string(field) + ": expected a 1-d array");
  if (!(a.flags() & py::array::c_style)) throw InvalidInput(std::string(field) + ": expected a contiguous array");
  return std::span<const T>(static_cast<const T*>(a.data()), static_cast<std::size_t>(a.size()));
}

// A caller's array the engine writes into: exactly dtype T (numpy bool for std::uint8_t),
// 1-d, contiguous, writeable, `n` rows.
template <class T>
T* as_output(const py::array& a, const char* field, std::size_t n) {
  const bool is_bool = std::is_same_v<T, std::uint8_t>;
  const bool dtype_ok = is_bool ? a.dtype().kind() == 'b'
                                : (a.dtype().kind() == py::dtype::of<T>().kind() &&
                                   a.dtype().itemsize() == static_cast<py::ssize_t>(sizeof(T)));
  if (!dtype_ok)
    throw InvalidInput(std::string(field) + ": expected a numpy array of dtype " +
                       (is_bool ? std::string("bool") : std::string(py::str(py::dtype::of<T>()))) + ", got " +
                       std::string(py::str(a.dtype())));
  if (a.ndim() != 1) throw InvalidInput(std::string(field) + ": expected a 1-d array");
  if (!(a.flags() & py::array::c_style)) throw InvalidInput(std::string(field) + ": expected a contiguous array");
  if (!a.writeable()) throw InvalidInput(std::string(field) + ": the array is read-only");
  if (static_cast<std::size_t>(a.size()) != n)
    throw InvalidInput(std::string(field) + ": has " + std::to_string(a.size()) + " rows, the exchange has " +
                       std::to_string(n) + " accounts");
  return static_cast<T*>(const_cast<void*>(a.data()));
}

template <class T, class Alloc>
py::array_t<T> to_numpy(std::vector<T, Alloc>&& v) {
  using Vec = std::vector<T, Alloc>;
  auto* owner = new Vec(std::move(v));
  py::capsule free_when_done(owner, [](void* p) { delete static_cast<Vec*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(owner->size())}, {static_cast<py::ssize_t>(sizeof(T))}, owner->data(),
                        free_when_done);
}

// uint8 flags are exposed as numpy bool without a copy.
template <class Alloc>
py::array to_numpy_bool(std::vector<std::uint8_t, Alloc>&& v) {
  using Vec = std::vector<std::uint8_t, Alloc>;
  auto* owner = new Vec(std::move(v));
  py::capsule free_when_done(owner, [](void* p) { delete static_cast<Vec*>(p); });
  return py::array(py::dtype("bool"), {static_cast<py::ssize_t>(owner->size())}, {py::ssize_t{1}}, owner->data(),
                   free_when_done);
}

}  // namespace deleverage::bindings
