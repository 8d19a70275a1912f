// libFuzzer target for the core's readers, built with clang (see cpp/fuzz/README.md):
// the first input byte picks the reader (snapshot / journal) and whether checksums are
// repaired, so mutations reach the parsers behind the checksum gate. Oracle: the input is
// either refused with CorruptSnapshot or yields a state that passes check_invariants (and,
// for snapshots, writes back the same bytes). Anything else (a crash, a sanitizer report,
// another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "deleverage/journal.hpp"
#include "deleverage/snapshot.hpp"

using namespace deleverage;

namespace {

void store_u64(std::byte* p, std::uint64_t v) { std::memcpy(p, &v, 8); }

Engine base_engine() {
  Engine e(6, 1);
  MarketSpec s;
  s.symbol = "A";
  s.maintenance_rate = 5'000'000;
  s.initial_rate = 10'000'000;
  s.liquidation_fee_rate = 1'000'000;
  e.add_market(s);
  const MarketId m[1] = {0};
  const i64 px[1] = {100};
  e.set_marks(m, px);
  const i64 ids[3] = {1, 2, 3}, amounts[3] = {1'000'000'000, 30'000'000, 500'000'000};
  e.deposit(ids, amounts);
  e.trade(2, 3, 0, 3, 100);
  e.insurance_deposit(5'000'000, 0);
  return e;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t mode = data[0];
  std::vector<std::byte> in(reinterpret_cast<const std::byte*>(data + 1),
                            reinterpret_cast<const std::byte*>(data + size));
  if ((mode & 1) == 0) {
    // snapshot
    if ((mode & 2) && in.size() >= kSnapshotHeaderBytes) {
      store_u64(in.data() + 16, in.size() - kSnapshotHeaderBytes);
      store_u64(in.data() + 24, checksum64(in.data() + kSnapshotHeaderBytes, in.size() - kSnapshotHeaderBytes, 1));
      store_u64(in.data() + 32, checksum64(in.data(), 32, 2));
    }
    try {
      Engine e = engine_from_snapshot(in, 1);
      e.check_invariants();
      const column<std::byte> again = snapshot_bytes(e);
      std::uint32_t version = 0;
      std::memcpy(&version, in.data() + 8, 4);
      // an older version is read, then written as the current one: only current ones round-trip
      if (version == kSnapshotVersion &&
          (again.size() != in.size() || std::memcmp(again.data(), in.data(), in.size()) != 0))
        __builtin_trap();
    } catch (const CorruptSnapshot&) {
    }
    return 0;
  }
  // journal records after a valid header for a fixed base state; whole records' checksums repaired
  static const Engine base = base_engine();
  static const column<std::byte> base_bytes = snapshot_bytes(base);
  std::vector<std::byte> journal(kJournalHeaderBytes);
  {
    const StateHash h = base.state_hash();
    std::memcpy(journal.data(), "DLVJRNL\0", 8);
    const std::uint32_t version = kJournalVersion, flags = 0;
    std::memcpy(journal.data() + 8, &version, 4);
    std::memcpy(journal.data() + 12, &flags, 4);
    store_u64(journal.data() + 16, h.lo);
    store_u64(journal.data() + 24, h.hi);
    store_u64(journal.data() + 32, checksum64(journal.data(), 32, 3));
  }
  std::size_t at = 0;
  while (at + 8 <= in.size()) {  // version 2 framing: length, its check, body, checksum
    std::uint32_t n;
    std::memcpy(&n, in.data() + at, 4);
    if (n == 0 || at + 8 + std::size_t{n} + 8 > in.size()) break;
    const std::uint32_t check = journal_length_check(n);
    std::memcpy(in.data() + at + 4, &check, 4);
    store_u64(in.data() + at + 8 + n, checksum64(in.data() + at, 8 + std::size_t{n}, 4));
    at += 8 + std::size_t{n} + 8;
  }
  journal.insert(journal.end(), in.begin(), in.end());
  Engine e = base;
  try {
    const JournalReplay r = replay_journal(e, journal);
    if (r.valid_bytes > r.total_bytes || r.truncated != (r.valid_bytes != journal.size())) __builtin_trap();
    e.check_invariants();
  } catch (const CorruptSnapshot&) {
  }
  return 0;
}
