// Baselines for the benchmarks: a streaming read of the same bytes the margin check reads,
// in compiled code and on the same threads, to compare against memory bandwidth.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <thread>

#include "deleverage/detail/parallel.hpp"
#include "deleverage/detail/uninit.hpp"
#include "numpy_io.hpp"

namespace py = pybind11;

namespace deleverage::bindings {

void register_bench(py::module_& m) {
  m.def(
      "stream_sum",
      [](const py::array& data, int threads) {
        auto v = as_span<std::int64_t>(data, "data");
        std::atomic<std::uint64_t> total{0};
        {
          py::gil_scoped_release release;
          const int t = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
          detail::parallel_for(v.size(), t, 1 << 16, [&](std::size_t b, std::size_t e) {
            std::uint64_t s = 0;
            for (std::size_t i = b; i < e; ++i) s += static_cast<std::uint64_t>(v[i]);
            total += s;
          });
        }
        return total.load();
      },
      py::arg("data"), py::arg("threads") = 0,
      "Sum of an int64 array read once front to back on all threads (a memory-bandwidth baseline).");
  m.def(
      "to_float",
      [](const py::array& values, const py::array& decimals) {
        // int64 units -> float64 human units: value / 10^decimals, the same correctly rounded
        // division numpy does, on all threads (floats live only here, at the boundary)
        auto v = as_span<std::int64_t>(values, "values");
        auto d = as_span<std::int64_t>(decimals, "decimals");
        if (d.size() != 1 && d.size() != v.size()) throw InvalidInput("decimals: one value or one per row");
        static constexpr double kPow10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                            1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
        for (std::size_t i = 0; i < d.size(); ++i)
          if (d[i] < 0 || d[i] > 22) throw InvalidInput("decimals[" + std::to_string(i) + "] must be between 0 and 22");
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
}

}  // namespace deleverage::bindings
