// JSON string quoting, shared by every JSON document sptelab writes (race
// results, Perfetto traces, benchmark reports).
#pragma once

#include <string>
#include <string_view>

namespace sptelab {

// `text` as a JSON string literal, quotes included: valid UTF-8 (RFC 8259)
// whatever `text` holds; a byte that is not part of a well-formed UTF-8
// sequence becomes U+FFFD.
std::string json_string(std::string_view text);

}  // namespace sptelab
