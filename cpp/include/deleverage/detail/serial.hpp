// Little-endian byte writer and bounds-checked reader shared by snapshots and the journal,
// and the 64-bit mixing used by the checksum and the state hash.
#pragma once
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "deleverage/detail/uninit.hpp"
#include "deleverage/errors.hpp"
#include "deleverage/fixed_point.hpp"
#include "deleverage/market.hpp"

namespace deleverage::detail {

// The formats are little-endian; on such hosts (every supported one) columns are copied
// as they are. A big-endian port would byte-swap in load_le/store_le/store_array/array.
static_assert(std::endian::native == std::endian::little,
              "the snapshot and journal formats assume a little-endian host");

[[noreturn]] inline void corrupt(const std::string& what) { throw CorruptSnapshot("snapshot: " + what); }

template <class T>
inline T load_le(const void* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <class T>
inline void store_le(void* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}
template <class T>
inline void store_array(void* dst, const T* src, std::size_t n) {
  if (n) std::memcpy(dst, src, n * sizeof(T));
}

// Reserves capacity for n elements and asks the kernel to back it with 2 MB pages before it
// is first touched. Snapshot buffers and the columns of a loaded engine are large, fresh and
// written once in full: with 4 KB pages their page faults cost more than the copy itself
// (measured 4x on the CI machine for 240 MB). Only a hint: without THP it changes nothing.
// `min_pages`: the smallest reservation (in 2 MB pages) worth the hint.
template <class V>
void reserve_huge(V& v, std::size_t n, std::size_t min_pages = 4) {
  v.reserve(n);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  using T = typename V::value_type;
  constexpr std::uintptr_t kHuge = std::uintptr_t{1} << 21;
  const std::size_t bytes = n * sizeof(T);
  if (bytes < min_pages * kHuge || !v.empty()) return;
  const auto begin = reinterpret_cast<std::uintptr_t>(v.data());
  const std::uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const std::uintptr_t last = (begin + bytes) & ~(kHuge - 1);
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

// A bijective 64-bit finalizer (splitmix64's): every input bit affects every output bit.
inline u64 mix64(u64 z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Sequential hash of 64-bit words: h <- mix64(h ^ (v * K)), a bijection of h for each v and of
// v for each h, so changing any single word of a sequence of equal length changes the result.
class Hasher {
 public:
  explicit Hasher(u64 seed) : h_(mix64(seed)) {}
  void add(u64 v) { h_ = mix64(h_ ^ (v * 0x9E3779B97F4A7C15ull)); }
  u64 value() const { return h_; }

 private:
  u64 h_;
};

class Writer {
 public:
  void reserve(std::size_t n) { reserve_huge(buf_, n); }
  std::byte* grow(std::size_t n) {
    const std::size_t at = buf_.size();
    buf_.resize(at + n);
    return buf_.data() + at;
  }
  void zeros(std::size_t n) { std::memset(grow(n), 0, n); }
  template <class T>
  void put(T v) {
    if constexpr (std::is_same_v<T, i128>) {
      put<u64>(static_cast<u64>(static_cast<u128>(v)));
      put<u64>(static_cast<u64>(static_cast<u128>(v) >> 64));
    } else {
      store_le<T>(grow(sizeof(T)), v);
    }
  }
  template <class T>
  void array(const T* v, std::size_t n) {
    store_array(grow(n * sizeof(T)), v, n);
  }
  void str(const std::string& s) {
    put<std::uint32_t>(static_cast<std::uint32_t>(s.size()));
    store_array(grow(s.size()), s.data(), s.size());
  }
  std::size_t size() const { return buf_.size(); }
  column<std::byte> take() { return std::move(buf_); }

 private:
  column<std::byte> buf_;
};

// Every read checks the bytes are there; counts are checked against the bytes left before
// anything is allocated for them. Failures throw CorruptSnapshot.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> b) : p_(b.data()), end_(b.data() + b.size()) {}
  std::size_t remaining() const { return static_cast<std::size_t>(end_ - p_); }
  bool done() const { return p_ == end_; }
  const std::byte* skip(std::size_t n) {
    if (n > remaining())
      corrupt("truncated contents (" + std::to_string(n) + " bytes needed, " + std::to_string(remaining()) + " left)");
    const std::byte* at = p_;
    p_ += n;
    return at;
  }
  template <class T>
  T get() {
    if constexpr (std::is_same_v<T, i128>) {
      const u64 lo = get<u64>(), hi = get<u64>();
      return static_cast<i128>((static_cast<u128>(hi) << 64) | lo);
    } else {
      return load_le<T>(skip(sizeof(T)));
    }
  }
  // A count of items of at least `min_item_bytes` each, at most `max_count`.
  template <class CountT>
  std::size_t count(std::size_t min_item_bytes, std::size_t max_count, const char* what) {
    const u64 n = static_cast<u64>(get<CountT>());
    if (n > max_count) corrupt(std::string(what) + " " + std::to_string(n) + " is out of range");
    if (min_item_bytes && n > remaining() / min_item_bytes)
      corrupt(std::string(what) + " " + std::to_string(n) + " exceeds the bytes left (" + std::to_string(remaining()) +
              ")");
    return static_cast<std::size_t>(n);
  }
  template <class T>
  void array(T* out, std::size_t n) {
    if (n > remaining() / sizeof(T)) corrupt("truncated array");
    store_array(out, reinterpret_cast<const T*>(skip(n * sizeof(T))), n);
  }
  std::string str(std::size_t max_bytes, const char* what) {
    const std::size_t n = count<std::uint32_t>(1, max_bytes, what);
    const std::byte* s = skip(n);
    return std::string(reinterpret_cast<const char*>(s), n);
  }

 private:
  const std::byte* p_;
  const std::byte* end_;
};

// A market's specification, as both the snapshot and the journal's add_market record hold it
// (docs/durability.md). `Out` is a Writer or any sink with the same put/str.
inline constexpr std::size_t kMaxTiers = 4096;
inline constexpr std::size_t kMaxSymbolBytes = 4096;

template <class Out>
void write_market_spec(Out& w, const MarketSpec& s) {
  w.str(s.symbol);
  w.template put<std::int32_t>(s.qty_decimals);
  w.template put<std::int32_t>(s.price_decimals);
  w.template put<i64>(s.maintenance_rate);
  w.template put<i64>(s.initial_rate);
  w.template put<i64>(s.liquidation_fee_rate);
  w.template put<std::uint32_t>(static_cast<std::uint32_t>(s.tiers.size()));
  for (const TierSpec& t : s.tiers) {
    w.template put<i64>(t.max_notional);
    w.template put<i64>(t.maintenance_rate);
    w.template put<i64>(t.initial_rate);
    w.template put<i64>(t.maintenance_amount);
  }
  w.template put<std::int32_t>(s.mark_decimals);  // snapshot version 3, journal version 3
}

// Files written before mark_decimals existed (snapshot and journal versions 1-2) end the spec
// after the tiers; their marks are on the order tick.
inline MarketSpec read_market_spec(Reader& r, bool has_mark_decimals) {
  MarketSpec s;
  s.symbol = r.str(kMaxSymbolBytes, "market symbol");
  s.qty_decimals = r.get<std::int32_t>();
  s.price_decimals = r.get<std::int32_t>();
  s.maintenance_rate = r.get<i64>();
  s.initial_rate = r.get<i64>();
  s.liquidation_fee_rate = r.get<i64>();
  const std::size_t n = r.count<std::uint32_t>(4 * 8, kMaxTiers, "tier count");
  s.tiers.resize(n);
  for (TierSpec& t : s.tiers) {
    t.max_notional = r.get<i64>();
    t.maintenance_rate = r.get<i64>();
    t.initial_rate = r.get<i64>();
    t.maintenance_amount = r.get<i64>();
  }
  s.mark_decimals = has_mark_decimals ? r.get<std::int32_t>() : -1;
  return s;
}

}  // namespace deleverage::detail
