// The Python-side engine object: the core engine plus the mutex that serializes calls from
// Python threads (the GIL is released while the engine works).
#pragma once
#include <pybind11/pybind11.h>

#include <memory>
#include <mutex>

#include "deleverage/engine.hpp"
#include "deleverage/journal.hpp"

namespace deleverage::bindings {

struct PyEngine {
  Engine engine;
  std::mutex mutex;
  // A read-only numpy copy of the account ids, shared by full margin reports: ids are only
  // ever appended, so any prefix of a longer copy is still right. Touched with the GIL held.
  pybind11::object ids;
  std::size_t ids_count = 0;
  // When open, the engine's recorder: every state-changing call (Engine::apply) is recorded.
  std::unique_ptr<Journal> journal;
  PyEngine(int money_decimals, int threads) : engine(money_decimals, threads) {}
  // A deep copy of the state (the ids cache is rebuilt on demand; no journal).
  explicit PyEngine(const Engine& other) : engine(other) {}
  explicit PyEngine(Engine&& other) : engine(std::move(other)) {}
};

// Runs fn(engine) with the GIL released and the engine's mutex held.
template <class Fn>
auto locked(PyEngine& self, Fn&& fn) {
  pybind11::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(self.mutex);
  return fn(self.engine);
}

}  // namespace deleverage::bindings
