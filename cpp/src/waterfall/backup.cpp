// The atomic backup of a waterfall step: every account is saved the first time the step
// touches it, and restore() puts them all back if the step throws.
#include "waterfall_run.hpp"

namespace deleverage {

void WaterfallRun::touch(std::uint32_t a) {
  if (flag(a, kBackedUp)) return;
  set_flag(a, kBackedUp);
  if (cfg_.policy == Policy::RiskAware) backup_of_[a] = backups_.size();
  // only the risk-aware policy reads the start equity (and only it pays for computing it)
  const i64 eq = cfg_.policy == Policy::RiskAware ? equity(a) : 0;
  const detail::Book& book = e_.book();
  const detail::AccountHot& h = book.hot()[a];
  backups_.push_back(Backup{a, h.balance, eq, backup_positions_.size(), h.count});
  for (std::uint32_t p = h.start; p < h.start + h.count; ++p)
    backup_positions_.push_back(SavedPosition{book.markets()[p], book.sizes()[p], book.entries()[p]});
}

void WaterfallRun::restore() {
  for (auto it = backups_.rbegin(); it != backups_.rend(); ++it) {
    const std::uint32_t a = it->account;
    const detail::AccountHot& h = e_.book().hot()[a];
    std::vector<MarketId> now;
    for (std::uint32_t p = h.start; p < h.start + h.count; ++p) now.push_back(e_.book().markets()[p]);
    for (MarketId m : now) e_.set_position(a, m, 0, 0);
    for (std::size_t i = it->first; i < it->first + it->count; ++i)
      e_.set_position(a, backup_positions_[i].market, backup_positions_[i].size, backup_positions_[i].entry);
    e_.book().hot()[a].balance = it->balance;
  }
  // what the failed call popped or pushed is not worth tracking: the queues start over
  e_.drop_adl_queues();
}

i64 WaterfallRun::start_equity(std::uint32_t a) const {
  const auto it = backup_of_.find(a);
  return it == backup_of_.end() ? equity(a) : backups_[it->second].equity;
}

WaterfallRun::~WaterfallRun() {
  for (std::uint32_t a : flagged_) e_.waterfall_flags()[a] = 0;
  e_.release_notes(0);  // a step that threw (finish() released it otherwise)
}

void WaterfallRun::require_representable() const {
  for (const Backup& b : backups_)
    if (!e_.representable(b.account)) e_.throw_unrepresentable(b.account, "liquidate");
}

// A close of `dq` lots for which the account receives `cash` (negative: pays).
void WaterfallRun::fill(std::uint32_t a, MarketId m, i64 dq, i64 cash) {
  touch(a);
  e_.apply_fill(a, m, dq, -cash);
}

}  // namespace deleverage
