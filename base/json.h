// JSON string quoting, shared by every JSON document sptelab writes (race
// results, Perfetto traces, benchmark reports).
#pragma once

#include <string>
#include <string_view>

namespace sptelab {

// `text` as a JSON string literal, quotes included.
std::string json_string(std::string_view text);

}  // namespace sptelab
