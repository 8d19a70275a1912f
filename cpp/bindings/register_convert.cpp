// Human units <-> integer units at the Python boundary (floats live only here): the
// conversions of whole columns, in one compiled pass on every core.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <mutex>
#include <thread>
#include <tuple>

#include "deleverage/detail/display.hpp"
#include "deleverage/detail/parallel.hpp"
#include "deleverage/detail/uninit.hpp"
#include "numpy_io.hpp"

namespace py = pybind11;

namespace deleverage::bindings {

namespace {
constexpr const double* kPow10 = detail::kPow10Double;

std::span<const std::int64_t> decimals_for(const py::array& decimals, std::size_t n) {
  auto d = as_span<std::int64_t>(decimals, "decimals");
  if (d.size() != 1 && d.size() != n) throw InvalidInput("decimals: one value or one per row");
  for (std::size_t i = 0; i < d.size(); ++i)
    if (d[i] < 0 || d[i] > 22) throw InvalidInput("decimals[" + std::to_string(i) + "] must be between 0 and 22");
  return d;
}

// The first row of each kind of bad value found so far (rows are split over threads).
struct FirstBad {
  std::size_t not_finite = SIZE_MAX, off_grid = SIZE_MAX, too_big = SIZE_MAX;
  void merge(const FirstBad& o) {
    not_finite = std::min(not_finite, o.not_finite);
    off_grid = std::min(off_grid, o.off_grid);
    too_big = std::min(too_big, o.too_big);
  }
};
}  // namespace

void register_convert(py::module_& m) {
  m.def(
      "to_float",
      [](const py::array& values, const py::array& decimals) {
        // int64 units -> float64 human units: value / 10^decimals, the same correctly rounded
        // division numpy does
        auto v = as_span<std::int64_t>(values, "values");
        auto d = decimals_for(decimals, v.size());
        column<double> out(v.size());
        {
          py::gil_scoped_release release;
          const int t = static_cast<int>(std::thread::hardware_concurrency());
          detail::parallel_for(v.size(), t, 1 << 16, [&](std::size_t b, std::size_t e) {
            if (d.size() == 1) {
              const double p = kPow10[d[0]];
              for (std::size_t i = b; i < e; ++i) out[i] = static_cast<double>(v[i]) / p;
            } else {
              for (std::size_t i = b; i < e; ++i) out[i] = static_cast<double>(v[i]) / kPow10[d[i]];
            }
          });
        }
        return to_numpy(std::move(out));
      },
      py::arg("values"), py::arg("decimals"));
  m.def(
      "to_fixed",
      [](const py::array& values, const py::array& decimals, bool on_grid, double grid_tolerance, double limit) {
        // float64 human units -> int64 units of 10^-decimals: x * 10^d rounded to nearest
        // (ties to even, as numpy's rint). Returns (units, kind, row): kind 0 when every row
        // converts, else the first row of the first kind of problem (1: not finite, 2: not
        // within grid_tolerance of a whole unit when on_grid, 3: |units| >= limit); the
        // caller words the error.
        auto v = as_span<double>(values, "values");
        auto d = decimals_for(decimals, v.size());
        column<std::int64_t> out(v.size());
        FirstBad bad;
        {
          py::gil_scoped_release release;
          std::mutex merge;
          const int t = static_cast<int>(std::thread::hardware_concurrency());
          detail::parallel_for(v.size(), t, 1 << 16, [&](std::size_t b, std::size_t e) {
            FirstBad mine;
            for (std::size_t i = b; i < e; ++i) {
              const double x = v[i];
              if (!std::isfinite(x)) {
                mine.not_finite = std::min(mine.not_finite, i);
                out[i] = 0;
                continue;
              }
              const double scaled = x * kPow10[d.size() == 1 ? d[0] : d[i]];
              const double rounded = std::nearbyint(scaled);
              if (on_grid && std::fabs(scaled - rounded) > grid_tolerance * std::max(1.0, std::fabs(scaled)))
                mine.off_grid = std::min(mine.off_grid, i);
              if (std::fabs(rounded) >= limit) {
                mine.too_big = std::min(mine.too_big, i);
                out[i] = 0;
                continue;
              }
              out[i] = static_cast<std::int64_t>(rounded);
            }
            std::lock_guard<std::mutex> lock(merge);
            bad.merge(mine);
          });
        }
        int kind = 0;
        std::size_t row = 0;
        if (bad.not_finite != SIZE_MAX)
          kind = 1, row = bad.not_finite;
        else if (bad.off_grid != SIZE_MAX)
          kind = 2, row = bad.off_grid;
        else if (bad.too_big != SIZE_MAX)
          kind = 3, row = bad.too_big;
        return std::make_tuple(to_numpy(std::move(out)), kind, row);
      },
      py::arg("values"), py::arg("decimals"), py::arg("on_grid"), py::arg("grid_tolerance"), py::arg("limit"));
}

}  // namespace deleverage::bindings
