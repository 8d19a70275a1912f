// The journal: an append-only file of every state-changing call on an engine, so that a
// snapshot plus the journal written after it rebuild the state exactly (replay_journal).
// Format and guarantees: docs/durability.md.
//
// Use: open a Journal on an engine, make it the engine's recorder, then make every
// state-changing call as a command through Engine::apply (commands.hpp):
//   Journal journal(path, engine);
//   engine.set_recorder(&journal);
//   engine.apply(commands::Deposit{ids, amounts});
// Each call is applied to the engine first; only a call that succeeded writes its record, so
// a call that throws leaves both the engine and the journal as they were. Each record reaches
// the operating system in one write() (it survives a crash of the process); close() and
// sync() also fsync. Detach the journal (set_recorder(nullptr)) before destroying it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "deleverage/commands.hpp"
#include "deleverage/engine.hpp"
#include "deleverage/waterfall.hpp"

namespace deleverage {

// Version 2 frames each record with a checked length (docs/durability.md); version 1 files
// (length without a check) are still read. Version 3 adds mark_decimals to add_market
// records; older journals replay with marks on the order tick.
inline constexpr std::uint32_t kJournalVersion = 3;
inline constexpr std::size_t kJournalHeaderBytes = 40;

// The check stored after each record's length (version 2): a bijection of the length, so
// any damage confined to the length or the check is detected (docs/durability.md).
std::uint32_t journal_length_check(std::uint32_t length);

struct JournalReplay {
  std::size_t records = 0;      // whole records applied
  bool truncated = false;       // the file ended inside a record (the partial tail was ignored)
  std::size_t valid_bytes = 0;  // bytes up to the end of the last whole record
  std::size_t total_bytes = 0;  // size of the input
};

class Journal final : public Recorder {
 public:
  // Creates (or replaces) the journal file at `path`; its header records the state hash of
  // `base`, the state the journal starts from. Throws Error on I/O failure.
  Journal(const std::string& path, const Engine& base);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // fsync and close; further calls throw. Idempotent.
  void close();
  // fsync what was written so far.
  void sync();
  bool is_open() const { return fd_ >= 0; }
  std::size_t records() const { return records_; }
  const std::string& path() const { return path_; }

  // Writes the command's record (Engine::apply calls it after the command succeeded). Throws
  // Error if the journal is closed or the write fails (the journal is then incomplete and
  // refuses further records).
  void record(const Command& command) override;

 private:
  void append(JournalOp op, std::span<const std::byte> payload);
  int fd_ = -1;
  bool broken_ = false;
  std::size_t records_ = 0;
  std::string path_;
};

// Applies the records of a journal to `engine`, which must be in the state the journal
// started from (its state hash must equal the header's, else CorruptSnapshot). Stops at the
// last whole record: a tail cut off mid-record is ignored and reported (truncated = true).
// A damaged whole record, an unknown op or a record the engine refuses throws
// CorruptSnapshot; the engine is then partly replayed: replay into a fresh copy.
JournalReplay replay_journal(Engine& engine, std::span<const std::byte> journal);

}  // namespace deleverage
