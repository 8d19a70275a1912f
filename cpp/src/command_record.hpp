// The journal record of each command (commands.hpp): its body's bytes, written and read.
// Internal to the core (journal.cpp); the byte layout is docs/durability.md.
#pragma once
#include <cstdint>
#include <deque>
#include <vector>

#include "deleverage/commands.hpp"
#include "deleverage/detail/serial.hpp"

namespace deleverage::detail {

// Owns the arrays decoded commands point at: keep it until the commands have been applied.
class DecodedArrays {
 public:
  std::span<const i64> keep(std::vector<i64> v) { return i64s_.emplace_back(std::move(v)); }
  std::span<const MarketId> keep(std::vector<MarketId> v) { return markets_.emplace_back(std::move(v)); }

 private:
  std::deque<std::vector<i64>> i64s_;
  std::deque<std::vector<MarketId>> markets_;
};

// Writes the command's record body (after the op byte).
void encode_command(Writer& w, const Command& command);
JournalOp command_op(const Command& command);
// Reads a record body written with journal format `version`; CorruptSnapshot if the op is
// unknown or the body is malformed (bytes missing or left over, a value out of range).
Command decode_command(std::uint8_t op, Reader& r, DecodedArrays& arrays, std::uint32_t version);

}  // namespace deleverage::detail
