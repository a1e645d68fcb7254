#include "scenarios/explore.h"

#include <fmt/format.h>

namespace sptelab::scenarios {
namespace {

const char* mark(bool bad) {
  return bad ? "YES" : "-";
}

std::string which(const ExploreRow& row, bool InterleavingOutcome::*field) {
  std::string out;
  for (const auto& cell : row.cells) {
    if (!(cell.outcome.*field)) continue;
    if (!out.empty()) out += ",";
    out += fmt::format("{}/{}", interleaving_name(cell.interleaving), host_op_name(cell.op));
  }
  return out;
}

}  // namespace

std::vector<std::pair<Interleaving, HostOp>> explored_cases() {
  return {{Interleaving::kGupBeforeChange, HostOp::kRemap},
          {Interleaving::kFaultInWindow, HostOp::kRemap},
          {Interleaving::kThirdThread, HostOp::kRemap},
          {Interleaving::kFaultInWindow, HostOp::kMigrate},
          {Interleaving::kThirdThread, HostOp::kMigrate}};
}

ExploreRow explore_scheme(const spte::Scheme& scheme) {
  ExploreRow row;
  row.scheme = scheme;
  for (const auto& [interleaving, op] : explored_cases()) {
    ExploreCell cell{interleaving, op, run_interleaving(scheme, interleaving, op)};
    row.stale_spte |= cell.outcome.stale_spte;
    row.lost_write |= cell.outcome.lost_write;
    row.use_after_free |= cell.outcome.use_after_free;
    row.cells.push_back(std::move(cell));
  }
  return row;
}

std::string format_explore_table(const std::vector<ExploreRow>& rows) {
  std::string out = fmt::format("{:<24} {:<6} {:<6} {:<6}  {}\n", "scheme", "stale", "lost", "uaf",
                                "broken by (interleaving/op)");
  for (const auto& row : rows) {
    std::string broken;
    for (const auto& cell : row.cells) {
      if (cell.outcome.coherent()) continue;
      if (!broken.empty()) broken += " ";
      broken += fmt::format("{}/{}", interleaving_name(cell.interleaving), host_op_name(cell.op));
    }
    out += fmt::format("{:<24} {:<6} {:<6} {:<6}  {}\n", row.scheme.name(), mark(row.stale_spte),
                       mark(row.lost_write), mark(row.use_after_free),
                       broken.empty() ? "coherent in every interleaving" : broken);
  }
  return out;
}

std::string explore_json(const std::vector<ExploreRow>& rows) {
  std::string out = "{\"results\": [";
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    out += fmt::format(
        "{}{{\"scheme\": \"{}\", \"stale_spte\": {}, \"lost_write\": {}, \"use_after_free\": {}, "
        "\"stale_in\": \"{}\", \"lost_in\": \"{}\", \"uaf_in\": \"{}\"}}",
        i ? ", " : "", row.scheme.name(), row.stale_spte, row.lost_write, row.use_after_free,
        which(row, &InterleavingOutcome::stale_spte), which(row, &InterleavingOutcome::lost_write),
        which(row, &InterleavingOutcome::use_after_free));
  }
  return out + "]}\n";
}

}  // namespace sptelab::scenarios
