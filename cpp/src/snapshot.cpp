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

// ------------------------------------------------------------------ the payload

// The sections in docs/durability.md's order; each component writes its own.
template <class Out>
void Engine::write_payload(Out& w) const {
  w.template put<std::int32_t>(markets_.money_decimals());
  w.template put<i64>(step_);
  flows_.write(w);
  markets_.write(w);
  insurance_.write(w);
  book_.write(w);
}

std::size_t Engine::payload_estimate() const {
  std::size_t market_bytes = 0;
  for (const MarketState& mk : markets_) market_bytes += 128 + mk.spec.symbol.size() + 32 * mk.spec.tiers.size();
  return 1024 + market_bytes + insurance_.snapshot_estimate() + book_.account_count() * kAccountBytes +
         book_.live_positions() * kPositionBytes;
}

Engine Engine::read_payload(Reader& r, int threads, std::uint32_t version) {
  Engine e(r.get<std::int32_t>(), threads);
  e.step_ = r.get<i64>();
  if (e.step_ < 0) corrupt("negative step");
  e.flows_.read(r, version);
  const std::vector<std::int32_t> pools = e.markets_.read(r, version, kMaxMarketsInFile);
  const std::size_t n_markets = pools.size();
  e.insurance_.read_pools(r, n_markets);
  const auto n_pools = static_cast<std::size_t>(e.insurance_.pool_count());
  for (std::size_t m = 0; m < n_markets; ++m)
    if (pools[m] < 0 || static_cast<std::size_t>(pools[m]) >= n_pools)
      corrupt("market " + std::to_string(m) + " pays from unknown pool");
  e.markets_.set_pools(pools);
  e.insurance_.read_records(r, n_markets);
  e.book_.read(r, n_markets);
  if (!r.done()) corrupt(std::to_string(r.remaining()) + " unexpected bytes after the positions");
  e.rebuild_after_load();
  return e;
}

void Engine::rebuild_after_load() {
  const std::size_t n_markets = markets_.size();
  const std::size_t n = book_.account_count();
  book_.size_holders(n_markets);
  // the largest |size| whose notional stays in range at both the mark and the valued mark
  // (value_in_range once per market instead of a 128-bit division per position)
  std::vector<i64> max_abs(n_markets, std::numeric_limits<i64>::max());
  for (std::size_t m = 0; m < n_markets; ++m) {
    const MarketState& mk = markets_[m];
    for (i64 price : {mk.mark, mk.valued_mark}) {
      if (price <= 0) continue;
      const i128 limit = static_cast<i128>(kMaxNotional) * markets_.scale() / (static_cast<i128>(price) * mk.pow10k);
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
  const std::size_t threads = static_cast<std::size_t>(std::max(1, threads_));
  std::vector<Part> parts(threads);
  std::atomic<std::size_t> next_part{0};
  detail::parallel_for(n, threads_, 1 << 15, [&](std::size_t begin, std::size_t end) {
    Part& part = parts[next_part.fetch_add(1) % threads];  // one chunk per thread
    part.net.assign(n_markets, 0);
    part.largest.assign(n_markets, 0);
    std::vector<std::uint32_t> stamp(n_markets, AccountIndex::kNone);
    const std::span<AccountHot> hot = book_.hot();
    const std::span<const std::uint16_t> pos_market = book_.markets();
    const std::span<const i64> pos_size = book_.sizes(), pos_entry = book_.entries();
    for (std::size_t a = begin; a < end; ++a) {
      part.cash += hot[a].balance;
      const std::uint32_t b = hot[a].start, c = hot[a].count;
      for (std::uint32_t s = b; s < b + c; ++s) {
        const std::size_t m = pos_market[s];
        const i64 q = pos_size[s];
        if (stamp[m] == a)
          corrupt("account " + std::to_string(book_.ids()[a]) + " holds two positions in market " + std::to_string(m));
        stamp[m] = static_cast<std::uint32_t>(a);
        if (q == 0 || q == std::numeric_limits<i64>::min())
          corrupt("position of account " + std::to_string(book_.ids()[a]) + " has size " + std::to_string(q));
        const i64 abs_q = q < 0 ? -q : q;
        if (abs_q > max_abs[m]) corrupt("a position's notional in market " + std::to_string(m) + " is out of range");
        part.largest[m] = std::max(part.largest[m], abs_q);
        part.net[m] += q;
        part.cash -= pos_entry[s];
      }
      // cached sums at each market's valued mark (every position checked above)
      hot[a].cache = account_sums(static_cast<std::uint32_t>(a), true);
      // the representable range (docs/semantics.md), as every state change keeps it
      if (hot[a].count != 0 && !representable(static_cast<std::uint32_t>(a)))
        corrupt("account " + std::to_string(book_.ids()[a]) +
                "'s equity or margin requirement does not fit in 64 bits");
    }
  });
  std::vector<i128> net(n_markets, 0);
  i128 cash = 0;
  for (const Part& part : parts) {
    cash += part.cash;
    for (std::size_t m = 0; m < part.net.size(); ++m) {
      net[m] += part.net[m];
      markets_[m].max_abs_size = std::max(markets_[m].max_abs_size, part.largest[m]);
    }
  }
  for (std::size_t m = 0; m < n_markets; ++m) {
    if (net[m] != 0) corrupt("market " + std::to_string(m) + " nets to " + to_string_i128(net[m]) + " lots");
  }
  const i128 fund = insurance_.total();
  const Flows& fl = flows_;
  // the flows come from the file: any of them may be huge, so the sums are checked too
  i128 held = 0, net_deposits = 0;
  const bool overflow = __builtin_add_overflow(cash, fund, &held) ||
                        __builtin_sub_overflow(fl.deposits, fl.withdrawals, &net_deposits) ||
                        __builtin_sub_overflow(net_deposits, fl.loaded_entry_notional, &net_deposits) ||
                        __builtin_add_overflow(net_deposits, fl.insurance_deposits, &net_deposits) ||
                        __builtin_add_overflow(net_deposits, fl.loaded_balances, &net_deposits);
  if (overflow || held != net_deposits) corrupt("conservation does not hold (accounts' cash + fund != net deposits)");
  // each market's holder list from the holder slots, which must form a permutation
  book_.rebuild_holders();
}

// ------------------------------------------------------------------ state hash

StateHash Engine::state_hash() const {
  // accounts: a commutative sum of a strong per-account hash, in two lanes
  const auto [lane_lo, lane_hi] = book_.hash_accounts(threads_);
  // everything else, in its natural (meaningful) order
  detail::Hasher g(0x676C6F62616C2121ull);
  g.add(static_cast<u64>(markets_.money_decimals()));
  g.add(static_cast<u64>(step_));
  flows_.hash(g);
  markets_.hash(g);
  insurance_.hash(g);
  g.add(book_.account_count());
  g.add(book_.live_positions());
  const u64 gv = g.value();
  StateHash out;
  out.lo = detail::mix64(lane_lo ^ detail::mix64(gv ^ 0x9E3779B97F4A7C15ull));
  out.hi = detail::mix64(lane_hi ^ detail::mix64(gv + 0xC2B2AE3D27D4EB4Full));
  return out;
}

// ------------------------------------------------------------------ header and entry points

namespace {
void fill_header(std::byte* h, std::size_t payload, u64 payload_checksum) {
  std::memcpy(h, kMagic, 8);
  detail::store_le<std::uint32_t>(h + 8, kSnapshotVersion);
  detail::store_le<std::uint32_t>(h + 12, 0);
  detail::store_le<u64>(h + 16, payload);
  detail::store_le<u64>(h + 24, payload_checksum);
  detail::store_le<u64>(h + 32, checksum64(h, 32, 2));
}

column<std::byte> write(const Engine& e) {
  Writer w;
  w.reserve(kSnapshotHeaderBytes + e.payload_estimate());
  w.zeros(kSnapshotHeaderBytes);  // filled in at the end
  e.write_payload(w);
  column<std::byte> out = w.take();
  const std::size_t payload = out.size() - kSnapshotHeaderBytes;
  fill_header(out.data(), payload, checksum64(out.data() + kSnapshotHeaderBytes, payload, 1));
  return out;
}

void save(const Engine& e, const std::string& path) {
  atomic_write(path, [&](int fd, const std::string& tmp) {
    std::byte header[kSnapshotHeaderBytes] = {};
    write_all(fd, header, sizeof(header), tmp);  // placeholder until the checksum is known
    FileSink sink(fd, tmp);
    e.write_payload(sink);
    sink.flush();
    fill_header(header, sink.total(), sink.checksum());
    if (::pwrite(fd, header, sizeof(header), 0) != static_cast<ssize_t>(sizeof(header)))
      throw Error(sys_error("cannot write", tmp));
  });
}

Engine read(std::span<const std::byte> bytes, int threads) {
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
    throw CorruptSnapshot("snapshot: format version " + std::to_string(version) + " is newer than this build reads (" +
                          std::to_string(kSnapshotVersion) + ")");
  if (detail::load_le<std::uint32_t>(h + 12) != 0) corrupt("unknown flags");
  const u64 payload = detail::load_le<u64>(h + 16);
  if (payload != bytes.size() - kSnapshotHeaderBytes)
    corrupt("payload is " + std::to_string(bytes.size() - kSnapshotHeaderBytes) + " bytes, header says " +
            std::to_string(payload) + (payload > bytes.size() - kSnapshotHeaderBytes ? " (truncated file)" : ""));
  if (detail::load_le<u64>(h + 24) != checksum64(h + kSnapshotHeaderBytes, payload, 1))
    corrupt("payload checksum mismatch");
  Reader r(bytes.subspan(kSnapshotHeaderBytes));
  try {
    return Engine::read_payload(r, threads, version);
  } catch (const CorruptSnapshot&) {
    throw;
  } catch (const Error& err) {  // a value the engine refuses (bad spec, overflow, ...)
    throw CorruptSnapshot(std::string("snapshot: inconsistent contents: ") + err.what());
  }
}

}  // namespace

column<std::byte> snapshot_bytes(const Engine& engine) { return write(engine); }

Engine engine_from_snapshot(std::span<const std::byte> bytes, int threads) { return read(bytes, threads); }

void save_snapshot(const Engine& engine, const std::string& path) { save(engine, path); }

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

}  // namespace deleverage
