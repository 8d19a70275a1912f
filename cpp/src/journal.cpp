// The journal writer (apply-and-record) and replay. Byte layout: docs/durability.md.
#include "deleverage/journal.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <limits>

#include "command_record.hpp"
#include "deleverage/detail/serial.hpp"
#include "deleverage/snapshot.hpp"

namespace deleverage {

namespace {
using detail::Reader;
using detail::Writer;

constexpr char kMagic[8] = {'D', 'L', 'V', 'J', 'R', 'N', 'L', '\0'};
// Record head: u32 length and u32 journal_length_check(length); the checksum follows the body.
constexpr std::size_t kRecordHead = 8;
constexpr std::size_t kRecordOverhead = kRecordHead + 8;
constexpr std::size_t kRecordHeadV1 = 4;  // version 1: the length alone
constexpr std::uint32_t kMaxRecordBody = 0x7FFFFFFFu;

[[noreturn]] void bad(const std::string& what) { throw CorruptSnapshot("journal: " + what); }

}  // namespace

// ------------------------------------------------------------------ writer

// A bijection of the 32-bit length (murmur3's finalizer after a constant): any damage
// confined to the length or to its check changes one without the other, so it is always
// told apart from a cut-off tail.
std::uint32_t journal_length_check(std::uint32_t n) {
  std::uint32_t h = n ^ 0x6A09E667u;
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

Journal::Journal(const std::string& path, const Engine& base) : path_(path) {
  const StateHash h = base.state_hash();
  std::byte header[kJournalHeaderBytes];
  std::memcpy(header, kMagic, 8);
  detail::store_le<std::uint32_t>(header + 8, kJournalVersion);
  detail::store_le<std::uint32_t>(header + 12, 0);
  detail::store_le<u64>(header + 16, h.lo);
  detail::store_le<u64>(header + 24, h.hi);
  detail::store_le<u64>(header + 32, checksum64(header, 32, 3));
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot create journal '" + path + "': " + std::strerror(errno));
  std::size_t done = 0;
  while (done < sizeof(header)) {
    const ssize_t w = ::write(fd_, header + done, sizeof(header) - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const std::string msg = std::strerror(errno);
      ::close(fd_);
      fd_ = -1;
      throw Error("cannot write journal '" + path + "': " + msg);
    }
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd_) != 0) {
    const std::string msg = std::strerror(errno);
    ::close(fd_);
    fd_ = -1;
    throw Error("cannot fsync journal '" + path + "': " + msg);
  }
}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
}

void Journal::close() {
  if (fd_ < 0) return;
  const int fd = fd_;
  fd_ = -1;
  const bool synced = ::fsync(fd) == 0;
  const std::string msg = synced ? "" : std::strerror(errno);
  ::close(fd);
  if (!synced) throw Error("cannot fsync journal '" + path_ + "': " + msg);
}

void Journal::sync() {
  if (fd_ >= 0 && ::fsync(fd_) != 0) throw Error("cannot fsync journal '" + path_ + "': " + std::strerror(errno));
}

void Journal::append(JournalOp op, std::span<const std::byte> body_payload) {
  if (fd_ < 0) throw Error("the journal '" + path_ + "' is closed");
  if (broken_) throw Error("the journal '" + path_ + "' failed earlier and is incomplete");
  const std::size_t body = 1 + body_payload.size();
  if (body > kMaxRecordBody) {
    broken_ = true;
    throw Error("journal record too large; the journal '" + path_ + "' is now incomplete");
  }
  std::vector<std::byte> rec(kRecordOverhead + body);
  detail::store_le<std::uint32_t>(rec.data(), static_cast<std::uint32_t>(body));
  detail::store_le<std::uint32_t>(rec.data() + 4, journal_length_check(static_cast<std::uint32_t>(body)));
  rec[kRecordHead] = static_cast<std::byte>(op);
  if (!body_payload.empty()) std::memcpy(rec.data() + kRecordHead + 1, body_payload.data(), body_payload.size());
  detail::store_le<u64>(rec.data() + kRecordHead + body, checksum64(rec.data(), kRecordHead + body, 4));
  std::size_t done = 0;
  while (done < rec.size()) {
    const ssize_t w = ::write(fd_, rec.data() + done, rec.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      broken_ = true;
      throw Error("cannot write journal '" + path_ + "': " + std::strerror(errno) +
                  " (the state changed; the journal is now incomplete)");
    }
    done += static_cast<std::size_t>(w);
  }
  ++records_;
}

void Journal::record(const Command& command) {
  Writer w;
  detail::encode_command(w, command);
  const column<std::byte> body = w.take();
  append(detail::command_op(command), body);
}

// ------------------------------------------------------------------ replay

JournalReplay replay_journal(Engine& engine, std::span<const std::byte> journal) {
  JournalReplay out;
  out.total_bytes = journal.size();
  if (journal.empty()) bad("empty input (0 bytes)");
  if (journal.size() < 8 || std::memcmp(journal.data(), kMagic, 8) != 0) bad("not a deleverage journal (bad magic)");
  if (journal.size() < kJournalHeaderBytes) bad("truncated header");
  const std::byte* h = journal.data();
  if (detail::load_le<u64>(h + 32) != checksum64(h, 32, 3)) bad("header checksum mismatch");
  const std::uint32_t version = detail::load_le<std::uint32_t>(h + 8);
  if (version == 0) bad("format version 0");
  if (version > kJournalVersion)
    bad("format version " + std::to_string(version) + " is newer than this build reads (" +
        std::to_string(kJournalVersion) + ")");
  if (detail::load_le<std::uint32_t>(h + 12) != 0) bad("unknown flags");
  const StateHash base{detail::load_le<u64>(h + 16), detail::load_le<u64>(h + 24)};
  if (!(engine.state_hash() == base))
    bad("the journal does not start from this state (state hash differs from the journal's base)");
  const std::size_t head = version >= 2 ? kRecordHead : kRecordHeadV1;
  std::size_t at = kJournalHeaderBytes;
  out.valid_bytes = at;
  while (at < journal.size()) {
    const std::size_t left = journal.size() - at;
    auto where = [&] { return "record " + std::to_string(out.records) + " at byte " + std::to_string(at); };
    if (left < head) {
      out.truncated = true;
      break;
    }  // cut inside the record's head
    const std::uint32_t body = detail::load_le<std::uint32_t>(h + at);
    // A damaged length is refused here, wherever the record is; only a whole, checked head
    // whose record runs past the end reads as a cut-off tail.
    if (head == kRecordHead && detail::load_le<std::uint32_t>(h + at + 4) != journal_length_check(body))
      bad(where() + ": damaged length field");
    if (body == 0 || body > kMaxRecordBody) bad(where() + " has a bad length");
    if (left < head + 8 + body) {
      out.truncated = true;
      break;
    }
    if (detail::load_le<u64>(h + at + head + body) != checksum64(h + at, head + body, 4))
      bad(where() + ": checksum mismatch");
    const std::uint8_t op = static_cast<std::uint8_t>(h[at + head]);
    Reader r(journal.subspan(at + head + 1, body - 1));
    detail::DecodedArrays arrays;
    Command command;
    try {
      command = detail::decode_command(op, r, arrays, version);
    } catch (const CorruptSnapshot& e) {
      throw CorruptSnapshot(std::string(e.what()) + " (record " + std::to_string(out.records) + ", " +
                            command_name(op) + ")");
    }
    try {
      std::visit([&](const auto& c) { (void)engine.apply(c); }, command);
    } catch (const Error& e) {
      bad("record " + std::to_string(out.records) + " (" + command_name(op) + ") failed on replay: " + e.what());
    }
    at += head + 8 + body;
    ++out.records;
    out.valid_bytes = at;
  }
  return out;
}

}  // namespace deleverage
