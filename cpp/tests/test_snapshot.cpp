// The core serializer and journal without Python: round trips, damaged input, replay.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "deleverage/commands.hpp"
#include "deleverage/journal.hpp"
#include "deleverage/snapshot.hpp"
#include "test_helpers.hpp"

namespace deleverage {
namespace {

using testing::dep;
using testing::mark;

MarketSpec spec(const std::string& symbol, i64 mmr, i64 imr) {
  MarketSpec s;
  s.symbol = symbol;
  s.maintenance_rate = mmr;
  s.initial_rate = imr;
  s.liquidation_fee_rate = 1'000'000;
  return s;
}

// Two accounts with a position each way in one market, a fund deposit and one waterfall step.
Engine small_engine() {
  Engine e(6, 1);
  e.add_market(spec("X", 5'000'000, 10'000'000));
  mark(e, 0, 100);
  dep(e, 1, 1'000'000'000);
  dep(e, 2, 20'000'000);
  dep(e, 3, 500'000'000);
  e.trade(2, 3, 0, 3, 100);  // value = 3 * 100 * 10^6
  e.insurance_deposit(5'000'000, 0);
  mark(e, 0, 90);
  WaterfallConfig c;
  c.executor.account = 1;
  e.liquidate(c);
  return e;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("deleverage_test_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

TEST(Snapshot, RoundTripIsBitExact) {
  Engine e = small_engine();
  ASSERT_EQ(e.step(), 1);
  const column<std::byte> bytes = snapshot_bytes(e);
  Engine back = engine_from_snapshot(bytes, 1);
  EXPECT_EQ(back.state_hash(), e.state_hash());
  EXPECT_EQ(back.account_ids(), e.account_ids());
  for (i64 id : e.account_ids()) EXPECT_EQ(back.balance(id), e.balance(id));
  EXPECT_EQ(back.insurance().balance(0), e.insurance().balance(0));
  EXPECT_EQ(back.insurance().ledger().size(), e.insurance().ledger().size());
  EXPECT_EQ(back.mark(0), 90);
  EXPECT_EQ(back.previous_mark(0), 100);
  back.check_invariants();
  const column<std::byte> again = snapshot_bytes(back);
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), again.begin(), again.end()));
}

TEST(Snapshot, FileRoundTripAndAtomicReplace) {
  Engine e = small_engine();
  const std::string path = temp_path("a.snap");
  save_snapshot(e, path);
  dep(e, 1, 1);
  save_snapshot(e, path);  // replaces the old file
  EXPECT_EQ(load_snapshot(path, 1).state_hash(), e.state_hash());
  std::remove(path.c_str());
  EXPECT_THROW(load_snapshot(path, 1), Error);
}

TEST(Snapshot, EveryTruncationAndBitFlipThrowsCorruptSnapshot) {
  const column<std::byte> bytes = snapshot_bytes(small_engine());
  for (std::size_t n = 0; n < bytes.size(); ++n)
    EXPECT_THROW(engine_from_snapshot(std::span(bytes.data(), n), 1), CorruptSnapshot) << "length " << n;
  column<std::byte> flipped = bytes;
  for (std::size_t i = 0; i < flipped.size(); ++i)
    for (int bit = 0; bit < 8; ++bit) {
      flipped[i] ^= static_cast<std::byte>(1 << bit);
      EXPECT_THROW(engine_from_snapshot(flipped, 1), CorruptSnapshot) << "byte " << i << " bit " << bit;
      flipped[i] ^= static_cast<std::byte>(1 << bit);
    }
}

TEST(Snapshot, HashIgnoresCreationOrder) {
  auto build = [](bool reversed) {
    Engine e(6, 1);
    e.add_market(spec("X", 5'000'000, 10'000'000));
    mark(e, 0, 100);
    const i64 ids_fwd[3] = {7, 8, 9}, ids_rev[3] = {9, 8, 7}, amounts[3] = {100, 100, 100};
    e.deposit(reversed ? std::span<const i64>(ids_rev) : std::span<const i64>(ids_fwd), amounts);
    const i64 acc_fwd[2] = {7, 8}, acc_rev[2] = {8, 7};
    const MarketId mk[2] = {0, 0};
    const i64 q_fwd[2] = {5, -5}, q_rev[2] = {-5, 5}, p[2] = {100, 100};
    if (reversed)
      e.load_positions(acc_rev, mk, q_rev, p);
    else
      e.load_positions(acc_fwd, mk, q_fwd, p);
    return e;
  };
  EXPECT_EQ(build(false).state_hash(), build(true).state_hash());
  Engine changed = build(false);
  dep(changed, 9, 1);
  EXPECT_NE(changed.state_hash(), build(false).state_hash());
}

TEST(Snapshot, SymbolsMustBeUtf8) {
  Engine e(6, 1);
  EXPECT_THROW(e.add_market(spec(std::string("\xBF", 1), 1, 2)), ConfigError);
  EXPECT_THROW(e.add_market(spec(std::string("\xC0\x80", 2), 1, 2)), ConfigError);  // overlong
  EXPECT_NO_THROW(e.add_market(spec("\xE2\x82\xBF-PERP", 1, 2)));                   // U+20BF
}

TEST(Journal, ReplayRebuildsTheStateAndStopsAtACutRecord) {
  Engine e = small_engine();
  const column<std::byte> base = snapshot_bytes(e);
  const std::string path = temp_path("j.log");
  std::vector<StateHash> hashes{e.state_hash()};
  {
    Journal j(path, e);
    e.set_recorder(&j);
    const i64 ids[2] = {2, 4}, amounts[2] = {7, 8};
    e.apply(commands::Deposit{ids, amounts});
    hashes.push_back(e.state_hash());
    const MarketId ms[1] = {0};
    const i64 ps[1] = {60};
    e.apply(commands::SetMarks{ms, ps});
    hashes.push_back(e.state_hash());
    WaterfallConfig c;
    c.executor.account = 1;
    c.mode = WaterfallMode::Haircut;
    e.apply(commands::Liquidate{c});
    hashes.push_back(e.state_hash());
    // a call that throws records nothing
    EXPECT_THROW(e.apply(commands::Trade{1, 1, 0, 1, 10}), Error);
    // nor does a call made on the engine directly, nor one on a copy
    (void)e.check_margin();
    Engine copy = e;
    EXPECT_EQ(copy.recorder(), nullptr);
    copy.apply(commands::Deposit{ids, amounts});
    EXPECT_EQ(j.records(), 3u);
    e.set_recorder(nullptr);
    j.close();
  }
  const column<std::byte> journal = read_file_bytes(path);
  std::remove(path.c_str());
  Engine full = engine_from_snapshot(base, 1);
  const JournalReplay r = replay_journal(full, journal);
  EXPECT_EQ(r.records, 3u);
  EXPECT_FALSE(r.truncated);
  EXPECT_EQ(full.state_hash(), e.state_hash());
  full.check_invariants();
  // cut one byte short: the last record is dropped and reported
  Engine cut = engine_from_snapshot(base, 1);
  const JournalReplay rc = replay_journal(cut, std::span(journal.data(), journal.size() - 1));
  EXPECT_EQ(rc.records, 2u);
  EXPECT_TRUE(rc.truncated);
  EXPECT_EQ(cut.state_hash(), hashes[2]);
  // a journal of another state is refused
  Engine other(6, 1);
  EXPECT_THROW(replay_journal(other, journal), CorruptSnapshot);
}

TEST(Journal, RecordsAdlFills) {
  Engine e(6, 1);
  e.add_market(spec("X", 5'000'000, 10'000'000));
  mark(e, 0, 100);
  dep(e, 2, 20'000'000);
  dep(e, 3, 500'000'000);
  e.trade(2, 3, 0, 3, 100);
  mark(e, 0, 95);
  const column<std::byte> base = snapshot_bytes(e);
  const std::string path = temp_path("adl.log");
  {
    Journal j(path, e);
    e.set_recorder(&j);
    e.apply(commands::AdlFill{2, 3, 0, 2, 95});                       // the long closes 2 of 3 lots against the short
    EXPECT_THROW(e.apply(commands::AdlFill{2, 3, 0, 5, 95}), Error);  // more lots than it holds: refused, not recorded
    EXPECT_EQ(j.records(), 1u);
    e.set_recorder(nullptr);
    j.close();
  }
  const column<std::byte> journal = read_file_bytes(path);
  std::remove(path.c_str());
  Engine replayed = engine_from_snapshot(base, 1);
  EXPECT_NE(replayed.state_hash(), e.state_hash());
  const JournalReplay r = replay_journal(replayed, journal);
  EXPECT_EQ(r.records, 1u);
  EXPECT_EQ(replayed.state_hash(), e.state_hash());
  replayed.check_invariants();
}

TEST(Checksum, DetectsAnyChangeWithinOneWord) {
  std::vector<unsigned char> data(100, 7);
  const u64 base = checksum64(data.data(), data.size());
  for (std::size_t i = 0; i < data.size(); ++i)
    for (int bit = 0; bit < 8; ++bit) {
      data[i] ^= static_cast<unsigned char>(1 << bit);
      EXPECT_NE(checksum64(data.data(), data.size()), base);
      data[i] ^= static_cast<unsigned char>(1 << bit);
    }
  EXPECT_NE(checksum64(data.data(), data.size() - 1), base);
}

}  // namespace
}  // namespace deleverage
