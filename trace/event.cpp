#include "trace/event.h"

namespace sptelab::trace {
namespace {

constexpr std::array<KindInfo, static_cast<size_t>(Kind::kCount)> kInfo = {{
#define SPTELAB_TRACE_INFO(kind, name, a0, a1, a2, a3) {name, {a0, a1, a2, a3}},
    SPTELAB_TRACE_KINDS(SPTELAB_TRACE_INFO)
#undef SPTELAB_TRACE_INFO
}};

}  // namespace

const KindInfo& info(Kind kind) {
  return kInfo[static_cast<size_t>(kind)];
}

std::optional<Kind> kind_from_name(std::string_view name) {
  for (size_t i = 0; i < kInfo.size(); ++i) {
    if (kInfo[i].name == name) return static_cast<Kind>(i);
  }
  return std::nullopt;
}

}  // namespace sptelab::trace
