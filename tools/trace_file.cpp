#include "tools/trace_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>

#include <fmt/core.h>

#include "base/error.h"

namespace sptelab::tools {

void write_trace_text(const std::string& path, const trace::Snapshot& snapshot) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "w"), std::fclose);
  if (!file) {
    throw_bad_input(fmt::format("cannot write the trace to {}: {}", path, std::strerror(errno)));
  }
  std::map<uint32_t, std::string> names;
  for (const trace::ThreadInfo& thread : snapshot.threads) names[thread.id] = thread.name;
  if (snapshot.overwritten > 0) {
    fmt::print(file.get(), "# {} events were lost to ring wrap-around\n", snapshot.overwritten);
  }
  uint64_t start = snapshot.events.empty() ? 0 : snapshot.events.front().ts_ns;
  for (const trace::Event& event : snapshot.events) {
    const trace::KindInfo& kind = trace::info(event.kind);
    std::string line = fmt::format("{:>14.9f} {:<10} {}", (event.ts_ns - start) / 1e9,
                                   names[event.thread], kind.name);
    for (size_t i = 0; i < kind.args.size(); ++i) {
      if (kind.args[i].empty()) continue;
      line += fmt::format(" {}={:#x}", kind.args[i], event.args[i]);
    }
    fmt::print(file.get(), "{}\n", line);
  }
  if (std::ferror(file.get())) {
    throw_bad_input(fmt::format("writing the trace to {} failed", path));
  }
}

}  // namespace sptelab::tools
