// Snapshots of the whole engine state, and the state hash. Format: docs/durability.md.
//
// A snapshot holds the LOGICAL state (markets with their specs, marks and pools; accounts in
// creation order with balances and positions; the insurance fund with its ledger and
// history; the flows and the step counter), not the engine's internal blocks, so the format
// survives layout changes. Internal caches (account index, per-market holder lists, cached
// margin sums) are rebuilt on load.
//
// Every reader error (truncated, bit-flipped, empty, foreign or future-version input, or a
// file whose values are inconsistent) throws CorruptSnapshot; nothing is allocated from a
// length before it has been checked against the bytes actually present.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "deleverage/engine.hpp"

namespace deleverage {

// Format version written by this build; files of a later version are refused.
// Version 2 adds the loaded_balances flow; version 1 files are still read (as 0). Version 3
// adds each market's mark_decimals; older files are read with marks on the order tick.
inline constexpr std::uint32_t kSnapshotVersion = 3;
// Size of the fixed header in front of the payload.
inline constexpr std::size_t kSnapshotHeaderBytes = 40;

// The whole state as bytes (header + payload).
column<std::byte> snapshot_bytes(const Engine& engine);
// Rebuilds an engine from snapshot_bytes() output. `threads` as in Engine's constructor
// (a runtime setting, not part of the state).
Engine engine_from_snapshot(std::span<const std::byte> bytes, int threads = 0);

// Writes a snapshot atomically: a temporary file next to `path`, fsync, rename over `path`,
// fsync of the directory. On any failure the old file (if any) is left as it was and the
// temporary file is removed. Throws Error with the failing system call on I/O errors.
void save_snapshot(const Engine& engine, const std::string& path);
// Reads a snapshot file. CorruptSnapshot for a bad file, Error if it cannot be opened.
Engine load_snapshot(const std::string& path, int threads = 0);

// A 64-bit checksum of a byte range (four independent multiply-rotate lanes, then a
// final avalanche). Not cryptographic: it catches accidental damage, not forgery.
std::uint64_t checksum64(const void* data, std::size_t size, std::uint64_t seed = 0);

// Reads a whole file into memory (Error if it cannot be opened or read).
column<std::byte> read_file_bytes(const std::string& path);
// Writes bytes to `path` atomically (temporary file, fsync, rename, fsync of the directory).
void write_file_atomic(const std::string& path, std::span<const std::byte> bytes);

}  // namespace deleverage
