// gzip compression for outputs named *.gz (trace --output FILE.json.gz).
//
// The `gzip` program does it: it is an Essential Debian package, so it is
// on every machine sptelab builds on, and a library (zlib) is not among the
// project's build dependencies. A hand-written deflate would compress worse
// and be code to maintain; running the program costs one fork.
#pragma once

#include <string>
#include <string_view>

namespace sptelab::tools {

// Whether the output path asks for compression (ends in ".gz").
bool wants_gzip(std::string_view path);

// The gzip file (RFC 1952) of `data`. Error(kEnvironment) when `gzip`
// cannot be run or fails, saying which package provides it.
std::string gzip_compress(std::string_view data);

}  // namespace sptelab::tools
