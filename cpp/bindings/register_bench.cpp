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
}

}  // namespace deleverage::bindings
