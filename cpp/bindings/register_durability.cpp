// Python binding of snapshots, the state hash and the journal (docs/durability.md).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>

#include "deleverage/journal.hpp"
#include "deleverage/snapshot.hpp"
#include "numpy_io.hpp"
#include "py_engine.hpp"

namespace py = pybind11;

namespace deleverage::bindings {

namespace {
py::int_ hash_to_int(const StateHash& h) {
  py::int_ hi(h.hi), lo(h.lo);
  return py::reinterpret_steal<py::int_>(PyNumber_Or(PyNumber_Lshift(hi.ptr(), py::int_(64).ptr()), lo.ptr()));
}

std::span<const std::byte> bytes_span(const py::bytes& b) {
  char* data = nullptr;
  Py_ssize_t size = 0;
  if (PyBytes_AsStringAndSize(b.ptr(), &data, &size) != 0) throw py::error_already_set();
  return {reinterpret_cast<const std::byte*>(data), static_cast<std::size_t>(size)};
}

// What a replay did, for Exchange.replay.
py::dict replay_info(const JournalReplay& r) {
  py::dict info;
  info["records"] = r.records;
  info["truncated"] = r.truncated;
  info["valid_bytes"] = r.valid_bytes;
  info["total_bytes"] = r.total_bytes;
  return info;
}

}  // namespace

void register_durability(py::module_& m, py::class_<PyEngine>& cls) {
  m.def(
      "checksum64",
      [](const py::bytes& data, std::uint64_t seed) {
        auto b = bytes_span(data);
        return checksum64(b.data(), b.size(), seed);
      },
      py::arg("data"), py::arg("seed") = 0, "The snapshot and journal checksum of a byte string (docs/durability.md).");
  m.def("journal_length_check", &journal_length_check, py::arg("length"),
        "The check stored after a journal record's length (version 2, docs/durability.md).");
  cls.def(
         "snapshot_bytes",
         [](PyEngine& s) {
           column<std::byte> b = locked(s, [&](Engine& e) { return snapshot_bytes(e); });
           return py::bytes(reinterpret_cast<const char*>(b.data()), static_cast<py::ssize_t>(b.size()));
         },
         "The whole state as snapshot bytes (header + payload).")
      .def_static(
          "from_snapshot_bytes",
          [](const py::bytes& data, int threads) {
            auto bytes = bytes_span(data);  // `data` stays referenced while the GIL is released
            std::unique_ptr<PyEngine> out;
            {
              py::gil_scoped_release release;
              out = std::make_unique<PyEngine>(engine_from_snapshot(bytes, threads));
            }
            return out;
          },
          py::arg("data"), py::arg("threads") = 0)
      .def(
          "save", [](PyEngine& s, const std::string& path) { locked(s, [&](Engine& e) { save_snapshot(e, path); }); },
          py::arg("path"))
      .def_static(
          "load",
          [](const std::string& path, int threads) {
            std::unique_ptr<PyEngine> out;
            {
              py::gil_scoped_release release;
              out = std::make_unique<PyEngine>(load_snapshot(path, threads));
            }
            return out;
          },
          py::arg("path"), py::arg("threads") = 0)
      .def("state_hash", [](PyEngine& s) { return hash_to_int(locked(s, [&](Engine& e) { return e.state_hash(); })); })
      .def("account_balances",
           [](PyEngine& s) {
             std::vector<i64> b = locked(s, [&](Engine& e) { return account_balances(e); });
             return to_numpy(std::move(b));
           })
      .def(
          "open_journal",
          [](PyEngine& s, const std::string& path) {
            locked(s, [&](Engine& e) {
              if (s.journal)
                throw InvalidInput("a journal is already open ('" + s.journal->path() + "'): close it first");
              s.journal = std::make_unique<Journal>(path, e);
              e.set_recorder(s.journal.get());
            });
          },
          py::arg("path"))
      .def("close_journal",
           [](PyEngine& s) {
             locked(s, [&](Engine& e) {
               if (!s.journal) return;
               e.set_recorder(nullptr);
               std::unique_ptr<Journal> j = std::move(s.journal);
               j->close();
             });
           })
      .def("sync_journal",
           [](PyEngine& s) {
             locked(s, [&](Engine&) {
               if (s.journal) s.journal->sync();
             });
           })
      .def_property_readonly("journal_records",
                             [](PyEngine& s) -> std::optional<std::size_t> {
                               return locked(s, [&](Engine&) -> std::optional<std::size_t> {
                                 if (!s.journal) return std::nullopt;
                                 return s.journal->records();
                               });
                             })
      .def_static(
          "replay",
          [](const std::string& snapshot_path, const std::string& journal_path, int threads) {
            std::unique_ptr<PyEngine> out;
            JournalReplay r;
            {
              py::gil_scoped_release release;
              Engine e = load_snapshot(snapshot_path, threads);
              const column<std::byte> j = read_file_bytes(journal_path);
              r = replay_journal(e, j);
              out = std::make_unique<PyEngine>(std::move(e));
            }
            return py::make_tuple(std::move(out), replay_info(r));
          },
          py::arg("snapshot_path"), py::arg("journal_path"), py::arg("threads") = 0)
      .def_static(
          "replay_bytes",
          [](const py::bytes& snapshot, const py::bytes& journal, int threads) {
            auto sb = bytes_span(snapshot);
            auto jb = bytes_span(journal);
            std::unique_ptr<PyEngine> out;
            JournalReplay r;
            {
              py::gil_scoped_release release;
              Engine e = engine_from_snapshot(sb, threads);
              r = replay_journal(e, jb);
              out = std::make_unique<PyEngine>(std::move(e));
            }
            return py::make_tuple(std::move(out), replay_info(r));
          },
          py::arg("snapshot"), py::arg("journal"), py::arg("threads") = 0);
}

}  // namespace deleverage::bindings
