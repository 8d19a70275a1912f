// Snapshot writer and reader, the state hash, the checksum and atomic file writes.
// The byte layout is specified in docs/durability.md; keep the two in step.
#include "deleverage/snapshot.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <type_traits>

#include "deleverage/detail/parallel.hpp"
#include "deleverage/detail/serial.hpp"

namespace deleverage {

namespace {
constexpr char kMagic[8] = {'D', 'L', 'V', 'S', 'N', 'A', 'P', '\0'};
constexpr std::size_t kMaxMarketsInFile = 1024;
// Bytes per account and per position in the column sections (id + balance + count;
// market + size + entry + holder slot).
constexpr std::size_t kAccountBytes = 8 + 8 + 4;
constexpr std::size_t kPositionBytes = 2 + 8 + 8 + 4;
constexpr std::size_t kLedgerBytes = 8 + 4 + 4 + 8 + 8 + 1;
constexpr std::size_t kHistoryBytes = 8 + 4 + 8;

std::string sys_error(const std::string& what, const std::string& path) {
  return what + " '" + path + "': " + std::strerror(errno);
}

using detail::corrupt;
using detail::Reader;
using detail::Writer;
}  // namespace

// ------------------------------------------------------------------ checksum

namespace {
// checksum64 over data that arrives in pieces; equal to the one-shot function on the whole.
// Four lanes, each a chain of bijections (xor a word, multiply by an odd constant, xor-shift):
// any change confined to one 8-byte word changes its lane and therefore the result.
class Checksum64 {
 public:
  explicit Checksum64(u64 seed)
      : lane_{seed ^ 0x243F6A8885A308D3ull, seed ^ 0x13198A2E03707344ull, seed ^ 0xA4093822299F31D0ull,
              seed ^ 0x082EFA98EC4E6C89ull} {}
  void update(const void* data, std::size_t size) {
    const auto* p = static_cast<const unsigned char*>(data);
    total_ += size;
    if (held_) {  // complete the held partial block first
      const std::size_t take = std::min(size, std::size_t{32} - held_);
      std::memcpy(block_ + held_, p, take);
      held_ += take;
      p += take;
      size -= take;
      if (held_ < 32) return;
      blocks(block_, 32);
      held_ = 0;
    }
    const std::size_t whole = size & ~std::size_t{31};
    blocks(p, whole);
    std::memcpy(block_, p + whole, size - whole);
    held_ = size - whole;
  }
  u64 finish() const {
    u64 a = lane_[0];
    std::size_t i = 0;
    for (; i + 8 <= held_; i += 8) a = round(a, detail::load_le<u64>(block_ + i), kM[1]);
    u64 tail = 0;
    for (std::size_t k = 0; i < held_; ++i, ++k) tail |= static_cast<u64>(block_[i]) << (8 * k);
    u64 h = detail::mix64(a);
    h = detail::mix64(h ^ lane_[1]);
    h = detail::mix64(h ^ lane_[2]);
    h = detail::mix64(h ^ lane_[3]);
    h = detail::mix64(h ^ tail);
    return detail::mix64(h ^ static_cast<u64>(total_));
  }

 private:
  static constexpr u64 kM[4] = {0xD6E8FEB86659FD93ull, 0xA0761D6478BD642Full, 0xE7037ED1A0B428DBull,
                                0x8EBC6AF09C88C6E3ull};
  static u64 round(u64 acc, u64 v, u64 m) {
    acc = (acc ^ v) * m;
    return acc ^ (acc >> 29);
  }
  void blocks(const unsigned char* p, std::size_t n) {
    u64 a = lane_[0], b = lane_[1], c = lane_[2], d = lane_[3];
    for (std::size_t i = 0; i < n; i += 32) {
      a = round(a, detail::load_le<u64>(p + i), kM[0]);
      b = round(b, detail::load_le<u64>(p + i + 8), kM[1]);
      c = round(c, detail::load_le<u64>(p + i + 16), kM[2]);
      d = round(d, detail::load_le<u64>(p + i + 24), kM[3]);
    }
    lane_[0] = a;
    lane_[1] = b;
    lane_[2] = c;
    lane_[3] = d;
  }
  u64 lane_[4];
  unsigned char block_[32] = {};
  std::size_t held_ = 0;
  std::size_t total_ = 0;
};

// Snapshot output straight to a file through a small reused buffer (no payload-sized
// allocation), checksumming as it goes.
class FileSink {
 public:
  FileSink(int fd, const std::string& path) : fd_(fd), path_(path), sum_(1) { buf_.resize(kChunk); }
  template <class T>
  void put(T v) {
    if constexpr (std::is_same_v<T, i128>) {
      put<u64>(static_cast<u64>(static_cast<u128>(v)));
      put<u64>(static_cast<u64>(static_cast<u128>(v) >> 64));
    } else {
      if (used_ + sizeof(T) > kChunk) flush();
      detail::store_le<T>(buf_.data() + used_, v);
      used_ += sizeof(T);
    }
  }
  template <class T>
  void array(const T* v, std::size_t n) {
    const auto* p = reinterpret_cast<const std::byte*>(v);
    std::size_t bytes = n * sizeof(T);
    while (bytes) {
      if (used_ == kChunk) flush();
      const std::size_t take = std::min(bytes, kChunk - used_);
      std::memcpy(buf_.data() + used_, p, take);
      used_ += take;
      p += take;
      bytes -= take;
    }
  }
  void str(const std::string& s) {
    put<std::uint32_t>(static_cast<std::uint32_t>(s.size()));
    array(s.data(), s.size());
  }
  void flush() {
    sum_.update(buf_.data(), used_);
    std::size_t done = 0;
    while (done < used_) {
      const ssize_t w = ::write(fd_, buf_.data() + done, used_ - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) throw Error(sys_error("cannot write", path_));
      done += static_cast<std::size_t>(w);
    }
    total_ += used_;
    used_ = 0;
  }
  std::size_t total() const { return total_; }
  u64 checksum() const { return sum_.finish(); }

 private:
  static constexpr std::size_t kChunk = std::size_t{1} << 20;
  int fd_;
  std::string path_;
  Checksum64 sum_;
  column<std::byte> buf_;
  std::size_t used_ = 0, total_ = 0;
};
}  // namespace

std::uint64_t checksum64(const void* data, std::size_t size, std::uint64_t seed) {
  Checksum64 c(seed);
  c.update(data, size);
  return c.finish();
}

// ------------------------------------------------------------------ files

column<std::byte> read_file_bytes(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(sys_error("cannot open", path));
  struct stat st{};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error(sys_error("cannot stat", path));
  }
  column<std::byte> out;
  detail::reserve_huge(out, static_cast<std::size_t>(st.st_size));
  out.resize(static_cast<std::size_t>(st.st_size));  // default-initialized: not touched yet
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t r = ::read(fd, out.data() + done, out.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      ::close(fd);
      throw Error(sys_error("cannot read", path));
    }
    if (r == 0) break;  // the file shrank while we read it: keep what was there
    done += static_cast<std::size_t>(r);
  }
  out.resize(done);
  ::close(fd);
  return out;
}

namespace {
// Creates `<path>.tmp.<pid>`, lets `fill(fd, tmp)` write it, fsyncs, renames over `path` and
// fsyncs the folder. On any failure the temporary file is removed and `path` is untouched.
template <class Fill>
void atomic_write(const std::string& path, Fill&& fill) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(sys_error("cannot create", tmp));
  try {
    fill(fd, tmp);
    if (::fsync(fd) != 0) throw Error(sys_error("cannot fsync", tmp));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const std::string msg = sys_error("cannot close", tmp);
    ::unlink(tmp.c_str());
    throw Error(msg);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string msg = sys_error("cannot rename to '" + path + "'", tmp);
    ::unlink(tmp.c_str());
    throw Error(msg);
  }
  // make the rename itself durable
  const std::size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_all(int fd, const std::byte* data, std::size_t size, const std::string& path) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t w = ::write(fd, data + done, std::min<std::size_t>(size - done, std::size_t{1} << 30));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw Error(sys_error("cannot write", path));
    done += static_cast<std::size_t>(w);
  }
}
}  // namespace

void write_file_atomic(const std::string& path, std::span<const std::byte> bytes) {
  atomic_write(path, [&](int fd, const std::string& tmp) { write_all(fd, bytes.data(), bytes.size(), tmp); });
}

// ------------------------------------------------------------------ the private state

struct SnapshotAccess {
  template <class Out>
  static void write_spec(Out& w, const MarketSpec& s) {
    detail::write_market_spec(w, s);
  }
  static MarketSpec read_spec(Reader& r, std::uint32_t version) { return detail::read_market_spec(r, version >= 3); }

  static std::size_t payload_estimate(const Engine& e) {
    const InsuranceFund& f = e.insurance_;
    std::size_t market_bytes = 0;
    for (const Engine::MarketState& mk : e.markets_)
      market_bytes += 128 + mk.spec.symbol.size() + 32 * mk.spec.tiers.size();
    return 1024 + market_bytes + 16 * f.balance_.size() + e.acc_id_.size() * kAccountBytes +
           e.live_positions_ * kPositionBytes + f.ledger_.size() * kLedgerBytes + f.history_.size() * kHistoryBytes;
  }

  // The payload (docs/durability.md), to a memory Writer or a FileSink.
  template <class Out>
  static void write_payload(const Engine& e, Out& w) {
    const InsuranceFund& f = e.insurance_;
    const std::size_t n = e.acc_id_.size(), p = e.live_positions_;
    w.template put<std::int32_t>(e.money_decimals_);
    w.template put<i64>(e.step_);
    w.template put<i128>(e.flows_.deposits);
    w.template put<i128>(e.flows_.withdrawals);
    w.template put<i128>(e.flows_.loaded_entry_notional);
    w.template put<i128>(e.flows_.insurance_deposits);
    w.template put<i128>(e.flows_.loaded_balances);  // version 2
    // markets
    w.template put<std::uint32_t>(static_cast<std::uint32_t>(e.markets_.size()));
    for (const Engine::MarketState& mk : e.markets_) {
      write_spec(w, mk.spec);
      w.template put<i64>(mk.mark);
      w.template put<i64>(mk.previous_mark);
      w.template put<i64>(mk.valued_mark);
      w.template put<std::int32_t>(mk.pool);
    }
    // insurance fund
    w.template put<std::uint32_t>(static_cast<std::uint32_t>(f.balance_.size()));
    for (i64 b : f.balance_) w.template put<i64>(b);
    w.template put<i64>(f.max_drawdown_);
    w.template put<std::int32_t>(f.window_);
    w.template put<i64>(f.current_step_);
    w.template put<std::uint32_t>(static_cast<std::uint32_t>(f.opening_.size()));
    for (i64 b : f.opening_) w.template put<i64>(b);
    w.template put<u64>(f.ledger_.size());
    for (const LedgerEntry& x : f.ledger_) {
      w.template put<i64>(x.step);
      w.template put<std::int32_t>(x.pool);
      w.template put<std::int32_t>(x.market);
      w.template put<i64>(x.account);
      w.template put<i64>(x.amount);
      w.template put<std::uint8_t>(static_cast<std::uint8_t>(x.reason));
    }
    w.template put<u64>(f.history_.size());
    for (const InsuranceFund::HistoryRow& x : f.history_) {
      w.template put<i64>(x.step);
      w.template put<std::int32_t>(x.pool);
      w.template put<i64>(x.balance);
    }
    // accounts, column by column
    w.template put<u64>(n);
    w.array(e.acc_id_.data(), n);
    for (std::size_t a = 0; a < n; ++a) w.template put<i64>(e.acc_[a].balance);
    for (std::size_t a = 0; a < n; ++a) w.template put<std::uint32_t>(e.acc_[a].count);
    // positions, column by column, in account order (each account's slots in block order)
    w.template put<u64>(p);
    for (std::size_t a = 0; a < n; ++a) w.array(e.pos_market_.data() + e.acc_[a].start, e.acc_[a].count);
    for (std::size_t a = 0; a < n; ++a) w.array(e.pos_size_.data() + e.acc_[a].start, e.acc_[a].count);
    for (std::size_t a = 0; a < n; ++a) w.array(e.pos_entry_.data() + e.acc_[a].start, e.acc_[a].count);
    for (std::size_t a = 0; a < n; ++a) w.array(e.pos_mslot_.data() + e.acc_[a].start, e.acc_[a].count);
  }

  static void fill_header(std::byte* h, std::size_t payload, u64 payload_checksum) {
    std::memcpy(h, kMagic, 8);
    detail::store_le<std::uint32_t>(h + 8, kSnapshotVersion);
    detail::store_le<std::uint32_t>(h + 12, 0);
    detail::store_le<u64>(h + 16, payload);
    detail::store_le<u64>(h + 24, payload_checksum);
    detail::store_le<u64>(h + 32, checksum64(h, 32, 2));
  }

  static column<std::byte> write(const Engine& e) {
    Writer w;
    w.reserve(kSnapshotHeaderBytes + payload_estimate(e));
    w.zeros(kSnapshotHeaderBytes);  // filled in at the end
    write_payload(e, w);
    column<std::byte> out = w.take();
    const std::size_t payload = out.size() - kSnapshotHeaderBytes;
    fill_header(out.data(), payload, checksum64(out.data() + kSnapshotHeaderBytes, payload, 1));
    return out;
  }

  static void save(const Engine& e, const std::string& path) {
    atomic_write(path, [&](int fd, const std::string& tmp) {
      std::byte header[kSnapshotHeaderBytes] = {};
      write_all(fd, header, sizeof(header), tmp);  // placeholder until the checksum is known
      FileSink sink(fd, tmp);
      write_payload(e, sink);
      sink.flush();
      fill_header(header, sink.total(), sink.checksum());
      if (::pwrite(fd, header, sizeof(header), 0) != static_cast<ssize_t>(sizeof(header)))
        throw Error(sys_error("cannot write", tmp));
    });
  }

  static Engine read(std::span<const std::byte> bytes, int threads) {
    if (bytes.empty()) corrupt("empty input (0 bytes)");
    if (bytes.size() < 8 || std::memcmp(bytes.data(), kMagic, 8) != 0) corrupt("not a deleverage snapshot (bad magic)");
    if (bytes.size() < kSnapshotHeaderBytes)
      corrupt("truncated header (" + std::to_string(bytes.size()) + " of " + std::to_string(kSnapshotHeaderBytes) +
              " bytes)");
    const std::byte* h = bytes.data();
    if (detail::load_le<u64>(h + 32) != checksum64(h, 32, 2)) corrupt("header checksum mismatch");
    const std::uint32_t version = detail::load_le<std::uint32_t>(h + 8);
    if (version == 0) corrupt("format version 0");
    if (version > kSnapshotVersion)
      throw CorruptSnapshot("snapshot: format version " + std::to_string(version) +
                            " is newer than this build reads (" + std::to_string(kSnapshotVersion) + ")");
    if (detail::load_le<std::uint32_t>(h + 12) != 0) corrupt("unknown flags");
    const u64 payload = detail::load_le<u64>(h + 16);
    if (payload != bytes.size() - kSnapshotHeaderBytes)
      corrupt("payload is " + std::to_string(bytes.size() - kSnapshotHeaderBytes) + " bytes, header says " +
              std::to_string(payload) + (payload > bytes.size() - kSnapshotHeaderBytes ? " (truncated file)" : ""));
    if (detail::load_le<u64>(h + 24) != checksum64(h + kSnapshotHeaderBytes, payload, 1))
      corrupt("payload checksum mismatch");
    Reader r(bytes.subspan(kSnapshotHeaderBytes));
    try {
      return read_payload(r, threads, version);
    } catch (const CorruptSnapshot&) {
      throw;
    } catch (const Error& err) {  // a value the engine refuses (bad spec, overflow, ...)
      throw CorruptSnapshot(std::string("snapshot: inconsistent contents: ") + err.what());
    }
  }

  static Engine read_payload(Reader& r, int threads, std::uint32_t version) {
    Engine e(r.get<std::int32_t>(), threads);
    e.step_ = r.get<i64>();
    if (e.step_ < 0) corrupt("negative step");
    e.flows_.deposits = r.get<i128>();
    e.flows_.withdrawals = r.get<i128>();
    e.flows_.loaded_entry_notional = r.get<i128>();
    e.flows_.insurance_deposits = r.get<i128>();
    if (version >= 2) e.flows_.loaded_balances = r.get<i128>();
    // markets
    const std::size_t n_markets = r.count<std::uint32_t>(64, kMaxMarketsInFile, "market count");
    std::vector<std::int32_t> pools(n_markets);
    for (std::size_t m = 0; m < n_markets; ++m) {
      e.add_market(read_spec(r, version));  // validates the spec like any add_market
      Engine::MarketState& mk = e.markets_[m];
      mk.mark = r.get<i64>();
      mk.previous_mark = r.get<i64>();
      mk.valued_mark = r.get<i64>();
      pools[m] = r.get<std::int32_t>();
      if (mk.mark < 0 || mk.previous_mark < 0 || mk.valued_mark < 0)
        corrupt("negative mark in market " + std::to_string(m));
    }
    // insurance fund
    InsuranceFund& f = e.insurance_;
    const std::size_t n_pools = r.count<std::uint32_t>(8, n_markets + 1, "pool count");
    if (n_pools == 0) corrupt("no insurance pool");
    f.balance_.resize(n_pools);
    for (i64& b : f.balance_) {
      b = r.get<i64>();
      if (b < 0) corrupt("negative insurance pool balance");
    }
    const i64 max_drawdown = r.get<i64>();
    const std::int32_t window = r.get<std::int32_t>();
    f.set_drawdown_rule(max_drawdown, window);
    f.current_step_ = r.get<i64>();
    const std::size_t n_opening = r.count<std::uint32_t>(8, n_pools, "opening balances");
    if (n_opening != 0 && n_opening != n_pools)
      corrupt("opening balances for " + std::to_string(n_opening) + " of " + std::to_string(n_pools) + " pools");
    f.opening_.resize(n_opening);
    for (i64& b : f.opening_) b = r.get<i64>();
    for (std::size_t m = 0; m < n_markets; ++m) {
      if (pools[m] < 0 || static_cast<std::size_t>(pools[m]) >= n_pools)
        corrupt("market " + std::to_string(m) + " pays from unknown pool");
      e.markets_[m].pool = pools[m];
    }
    const std::size_t n_ledger = r.count<u64>(kLedgerBytes, std::numeric_limits<std::size_t>::max(), "ledger length");
    f.ledger_.resize(n_ledger);
    for (LedgerEntry& x : f.ledger_) {
      x.step = r.get<i64>();
      x.pool = r.get<std::int32_t>();
      x.market = r.get<std::int32_t>();
      x.account = r.get<i64>();
      x.amount = r.get<i64>();
      const std::uint8_t reason = r.get<std::uint8_t>();
      if (x.pool < 0 || static_cast<std::size_t>(x.pool) >= n_pools) corrupt("ledger entry with unknown pool");
      if (x.market < -1 || x.market >= static_cast<std::int32_t>(n_markets))
        corrupt("ledger entry with unknown market");
      if (reason > static_cast<std::uint8_t>(LedgerReason::DeficitPayment)) corrupt("ledger entry with unknown reason");
      x.reason = static_cast<LedgerReason>(reason);
    }
    const std::size_t n_history =
        r.count<u64>(kHistoryBytes, std::numeric_limits<std::size_t>::max(), "history length");
    f.history_.resize(n_history);
    for (InsuranceFund::HistoryRow& x : f.history_) {
      x.step = r.get<i64>();
      x.pool = r.get<std::int32_t>();
      x.balance = r.get<i64>();
      if (x.pool < 0 || static_cast<std::size_t>(x.pool) >= n_pools) corrupt("history row with unknown pool");
    }
    // accounts
    const std::size_t n = r.count<u64>(kAccountBytes, AccountIndex::kNone - 2, "account count");
    detail::reserve_huge(e.acc_id_, n);
    detail::reserve_huge(e.acc_, n);
    detail::reserve_huge(e.acc_cap_, n);
    e.acc_id_.resize(n);
    r.array(e.acc_id_.data(), n);
    e.acc_.resize(n);
    e.acc_cap_.resize(n);
    const std::byte* balances = r.skip(n * 8);
    const std::byte* counts = r.skip(n * 4);
    u64 total = 0;
    for (std::size_t a = 0; a < n; ++a) {
      const std::uint32_t c = detail::load_le<std::uint32_t>(counts + 4 * a);
      if (c > n_markets)
        corrupt("account " + std::to_string(e.acc_id_[a]) + " holds more positions than there are markets");
      e.acc_[a].balance = detail::load_le<i64>(balances + 8 * a);
      e.acc_[a].start = static_cast<std::uint32_t>(total);
      e.acc_[a].count = c;
      e.acc_cap_[a] = c;
      total += c;
      if (total >= Engine::kNoSlot) corrupt("too many positions");
    }
    e.index_.reserve(n, e.acc_id_);
    for (std::size_t a = 0; a < n; ++a) {
      if (e.index_.find(e.acc_id_[a], e.acc_id_) != AccountIndex::kNone)
        corrupt("account id " + std::to_string(e.acc_id_[a]) + " appears twice");
      e.index_.insert(e.acc_id_[a], static_cast<std::uint32_t>(a), e.acc_id_);
    }
    // positions
    const std::size_t p = r.count<u64>(kPositionBytes, std::numeric_limits<std::size_t>::max(), "position count");
    if (p != total)
      corrupt("position count " + std::to_string(p) + " does not match the accounts' " + std::to_string(total));
    detail::reserve_huge(e.pos_market_, p);
    detail::reserve_huge(e.pos_size_, p);
    detail::reserve_huge(e.pos_entry_, p);
    detail::reserve_huge(e.pos_mslot_, p);
    e.pos_market_.resize(p);
    e.pos_size_.resize(p);
    e.pos_entry_.resize(p);
    e.pos_mslot_.resize(p);
    r.array(e.pos_market_.data(), p);
    r.array(e.pos_size_.data(), p);
    r.array(e.pos_entry_.data(), p);
    r.array(e.pos_mslot_.data(), p);
    if (!r.done()) corrupt(std::to_string(r.remaining()) + " unexpected bytes after the positions");
    e.live_positions_ = p;
    e.abandoned_slots_ = 0;
    rebuild_positions(e, n_markets);
    return e;
  }

  // Checks every position and rebuilds the per-market holder lists, the size bounds and the
  // cached margin sums; then conservation and zero net size.
  static void rebuild_positions(Engine& e, std::size_t n_markets) {
    const std::size_t n = e.acc_id_.size();
    std::vector<std::size_t> holders(n_markets, 0);
    for (std::uint16_t m : e.pos_market_) {
      if (m >= n_markets) corrupt("position in unknown market " + std::to_string(m));
      ++holders[m];
    }
    for (std::size_t m = 0; m < n_markets; ++m) e.markets_[m].accounts.assign(holders[m], AccountIndex::kNone);
    // the largest |size| whose notional stays in range at both the mark and the valued mark
    // (value_in_range once per market instead of a 128-bit division per position)
    std::vector<i64> max_abs(n_markets, std::numeric_limits<i64>::max());
    for (std::size_t m = 0; m < n_markets; ++m) {
      const Engine::MarketState& mk = e.markets_[m];
      for (i64 price : {mk.mark, mk.valued_mark}) {
        if (price <= 0) continue;
        const i128 limit = static_cast<i128>(kMaxNotional) * e.scale_s_ / (static_cast<i128>(price) * mk.pow10k);
        if (limit < max_abs[m]) max_abs[m] = static_cast<i64>(limit);
      }
    }
    // Per-account checks and the cached sums, in parallel over accounts; each thread keeps
    // its own partial sums, merged below.
    struct Part {
      std::vector<i128> net;
      std::vector<i64> largest;
      i128 cash = 0;
    };
    const std::size_t threads = static_cast<std::size_t>(std::max(1, e.threads_));
    std::vector<Part> parts(threads);
    std::atomic<std::size_t> next_part{0};
    detail::parallel_for(n, e.threads_, 1 << 15, [&](std::size_t begin, std::size_t end) {
      Part& part = parts[next_part.fetch_add(1) % threads];  // one chunk per thread
      part.net.assign(n_markets, 0);
      part.largest.assign(n_markets, 0);
      std::vector<std::uint32_t> stamp(n_markets, AccountIndex::kNone);
      for (std::size_t a = begin; a < end; ++a) {
        part.cash += e.acc_[a].balance;
        const std::uint32_t b = e.acc_[a].start, c = e.acc_[a].count;
        for (std::uint32_t s = b; s < b + c; ++s) {
          const std::size_t m = e.pos_market_[s];
          const i64 q = e.pos_size_[s];
          if (stamp[m] == a)
            corrupt("account " + std::to_string(e.acc_id_[a]) + " holds two positions in market " + std::to_string(m));
          stamp[m] = static_cast<std::uint32_t>(a);
          if (q == 0 || q == std::numeric_limits<i64>::min())
            corrupt("position of account " + std::to_string(e.acc_id_[a]) + " has size " + std::to_string(q));
          const i64 abs_q = q < 0 ? -q : q;
          if (abs_q > max_abs[m]) corrupt("a position's notional in market " + std::to_string(m) + " is out of range");
          part.largest[m] = std::max(part.largest[m], abs_q);
          part.net[m] += q;
          part.cash -= e.pos_entry_[s];
        }
        // cached sums at each market's valued mark (every position checked above)
        e.acc_[a].cache = e.account_sums(static_cast<std::uint32_t>(a), true);
        // the representable range (docs/semantics.md), as every state change keeps it
        if (e.acc_[a].count != 0 && !e.representable(static_cast<std::uint32_t>(a)))
          corrupt("account " + std::to_string(e.acc_id_[a]) +
                  "'s equity or margin requirement does not fit in 64 bits");
      }
    });
    std::vector<i128> net(n_markets, 0);
    i128 cash = 0;
    for (const Part& part : parts) {
      cash += part.cash;
      for (std::size_t m = 0; m < part.net.size(); ++m) {
        net[m] += part.net[m];
        e.markets_[m].max_abs_size = std::max(e.markets_[m].max_abs_size, part.largest[m]);
      }
    }
    for (std::size_t m = 0; m < n_markets; ++m) {
      if (net[m] != 0) corrupt("market " + std::to_string(m) + " nets to " + to_string_i128(net[m]) + " lots");
    }
    const i128 fund = e.insurance_.total();
    const Flows& fl = e.flows_;
    // the flows come from the file: any of them may be huge, so the sums are checked too
    i128 held = 0, net_deposits = 0;
    const bool overflow = __builtin_add_overflow(cash, fund, &held) ||
                          __builtin_sub_overflow(fl.deposits, fl.withdrawals, &net_deposits) ||
                          __builtin_sub_overflow(net_deposits, fl.loaded_entry_notional, &net_deposits) ||
                          __builtin_add_overflow(net_deposits, fl.insurance_deposits, &net_deposits) ||
                          __builtin_add_overflow(net_deposits, fl.loaded_balances, &net_deposits);
    if (overflow || held != net_deposits) corrupt("conservation does not hold (accounts' cash + fund != net deposits)");
    // each market's holder list from the holder slots, which must form a permutation
    for (std::size_t a = 0; a < n; ++a) {
      const std::uint32_t b = e.acc_[a].start, c = e.acc_[a].count;
      for (std::uint32_t s = b; s < b + c; ++s) {
        std::vector<std::uint32_t>& list = e.markets_[e.pos_market_[s]].accounts;
        const std::uint32_t ms = e.pos_mslot_[s];
        if (ms >= list.size() || list[ms] != AccountIndex::kNone)
          corrupt("market holder list of market " + std::to_string(e.pos_market_[s]) + " is not a permutation");
        list[ms] = static_cast<std::uint32_t>(a);
      }
    }
  }

  static std::vector<i64> balances(const Engine& e) {
    std::vector<i64> out(e.acc_.size());
    for (std::size_t a = 0; a < out.size(); ++a) out[a] = e.acc_[a].balance;
    return out;
  }

  // ---------------------------------------------------------------- state hash

  static StateHash hash(const Engine& e) {
    using detail::Hasher;
    const std::size_t n = e.acc_id_.size();
    // accounts: a commutative sum of a strong per-account hash, in two lanes
    u64 lane_lo = 0, lane_hi = 0;
    std::vector<u64> part_lo(static_cast<std::size_t>(std::max(1, e.threads_)), 0), part_hi(part_lo.size(), 0);
    std::atomic<std::size_t> part_index{0};
    detail::parallel_for(n, e.threads_, 1 << 15, [&](std::size_t b, std::size_t end) {
      u64 lo = 0, hi = 0;
      std::vector<std::uint32_t> order;
      for (std::size_t a = b; a < end; ++a) {
        const std::uint32_t s0 = e.acc_[a].start, c = e.acc_[a].count;
        order.resize(c);
        for (std::uint32_t i = 0; i < c; ++i) order[i] = s0 + i;
        std::sort(order.begin(), order.end(),
                  [&](std::uint32_t x, std::uint32_t y) { return e.pos_market_[x] < e.pos_market_[y]; });
        Hasher h(0x6163636F756E7421ull);
        h.add(static_cast<u64>(e.acc_id_[a]));
        h.add(static_cast<u64>(e.acc_[a].balance));
        h.add(c);
        for (std::uint32_t s : order) {
          h.add(e.pos_market_[s]);
          h.add(static_cast<u64>(e.pos_size_[s]));
          h.add(static_cast<u64>(e.pos_entry_[s]));
        }
        lo += detail::mix64(h.value() ^ 0x5851F42D4C957F2Dull);
        hi += detail::mix64(h.value() + 0x14057B7EF767814Full);
      }
      const std::size_t k = part_index.fetch_add(1);
      part_lo[k % part_lo.size()] += lo;  // chunks never exceed the thread count
      part_hi[k % part_hi.size()] += hi;
    });
    for (std::size_t k = 0; k < part_lo.size(); ++k) {
      lane_lo += part_lo[k];
      lane_hi += part_hi[k];
    }
    // everything else, in its natural (meaningful) order
    Hasher g(0x676C6F62616C2121ull);
    g.add(static_cast<u64>(e.money_decimals_));
    g.add(static_cast<u64>(e.step_));
    for (i128 v :
         {e.flows_.deposits, e.flows_.withdrawals, e.flows_.loaded_entry_notional, e.flows_.insurance_deposits}) {
      g.add(static_cast<u64>(static_cast<u128>(v)));
      g.add(static_cast<u64>(static_cast<u128>(v) >> 64));
    }
    if (e.flows_.loaded_balances != 0) {  // hashed only when used: earlier states keep their hashes
      g.add(static_cast<u64>(static_cast<u128>(e.flows_.loaded_balances)));
      g.add(static_cast<u64>(static_cast<u128>(e.flows_.loaded_balances) >> 64));
    }
    g.add(e.markets_.size());
    for (const Engine::MarketState& mk : e.markets_) {
      g.add(mk.spec.symbol.size());
      for (char ch : mk.spec.symbol) g.add(static_cast<unsigned char>(ch));
      g.add(static_cast<u64>(mk.spec.qty_decimals));
      g.add(static_cast<u64>(mk.spec.price_decimals));
      // (only when finer than the tick: states without finer marks keep their old hashes)
      if (mk.spec.mark_decimals != mk.spec.price_decimals)
        g.add(static_cast<u64>(mk.spec.mark_decimals) + (1ull << 32));
      g.add(static_cast<u64>(mk.spec.maintenance_rate));
      g.add(static_cast<u64>(mk.spec.initial_rate));
      g.add(static_cast<u64>(mk.spec.liquidation_fee_rate));
      g.add(mk.spec.tiers.size());
      for (const TierSpec& t : mk.spec.tiers) {
        g.add(static_cast<u64>(t.max_notional));
        g.add(static_cast<u64>(t.maintenance_rate));
        g.add(static_cast<u64>(t.initial_rate));
        g.add(static_cast<u64>(t.maintenance_amount));
      }
      g.add(static_cast<u64>(mk.mark));
      g.add(static_cast<u64>(mk.previous_mark));
      g.add(static_cast<u64>(mk.pool));
    }
    const InsuranceFund& f = e.insurance_;
    g.add(f.balance_.size());
    for (i64 b : f.balance_) g.add(static_cast<u64>(b));
    g.add(static_cast<u64>(f.max_drawdown_));
    g.add(static_cast<u64>(f.window_));
    g.add(f.ledger_.size());
    for (const LedgerEntry& x : f.ledger_) {
      g.add(static_cast<u64>(x.step));
      g.add(static_cast<u64>(x.pool));
      g.add(static_cast<u64>(x.market));
      g.add(static_cast<u64>(x.account));
      g.add(static_cast<u64>(x.amount));
      g.add(static_cast<u64>(x.reason));
    }
    g.add(f.history_.size());
    for (const InsuranceFund::HistoryRow& x : f.history_) {
      g.add(static_cast<u64>(x.step));
      g.add(static_cast<u64>(x.pool));
      g.add(static_cast<u64>(x.balance));
    }
    g.add(n);
    g.add(e.live_positions_);
    const u64 gv = g.value();
    StateHash out;
    out.lo = detail::mix64(lane_lo ^ detail::mix64(gv ^ 0x9E3779B97F4A7C15ull));
    out.hi = detail::mix64(lane_hi ^ detail::mix64(gv + 0xC2B2AE3D27D4EB4Full));
    return out;
  }
};

column<std::byte> snapshot_bytes(const Engine& engine) { return SnapshotAccess::write(engine); }

std::vector<i64> account_balances(const Engine& engine) { return SnapshotAccess::balances(engine); }

Engine engine_from_snapshot(std::span<const std::byte> bytes, int threads) {
  return SnapshotAccess::read(bytes, threads);
}

void save_snapshot(const Engine& engine, const std::string& path) { SnapshotAccess::save(engine, path); }

Engine load_snapshot(const std::string& path, int threads) {
  // Map the file rather than copy it: the page cache pages are read in place.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(sys_error("cannot open", path));
  struct stat st{};
  if (::fstat(fd, &st) != 0) {
    const std::string msg = sys_error("cannot stat", path);
    ::close(fd);
    throw Error(msg);
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size == 0 || !S_ISREG(st.st_mode)) {  // nothing to map: read what is there
    ::close(fd);
    const column<std::byte> bytes = read_file_bytes(path);
    return engine_from_snapshot(bytes, threads);
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) {
    const column<std::byte> bytes = read_file_bytes(path);
    return engine_from_snapshot(bytes, threads);
  }
  struct Unmap {
    void* p;
    std::size_t n;
    ~Unmap() { ::munmap(p, n); }
  } unmap{map, size};
  // A file truncated by another process while mapped would fault (SIGBUS): snapshots are
  // written to a temporary file and renamed, so the file we opened is never truncated.
  return engine_from_snapshot(std::span(static_cast<const std::byte*>(map), size), threads);
}

StateHash Engine::state_hash() const { return SnapshotAccess::hash(*this); }

}  // namespace deleverage
