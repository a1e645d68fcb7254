#include "trace/file.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>

#include <fmt/core.h>

#include "base/error.h"
#include "base/files.h"

namespace sptelab::trace {
namespace {

// File layout (little-endian; docs/tracing.md):
//   header:  "SPTELAB\0" | u32 version | u32 section count
//   section: u32 tag | u64 payload length | u32 CRC-32 of the payload | payload
// Payloads use LEB128 varints and length-prefixed strings.
constexpr std::string_view kMagic{"SPTELAB\0", 8};
constexpr size_t kHeaderBytes = 16;
constexpr size_t kSectionHeaderBytes = 16;
// Far more than any run writes (a ring holds 2^18 events per thread).
constexpr uint64_t kMaxTraceBytes = uint64_t{4} << 30;

constexpr uint32_t tag(const char (&name)[5]) {
  return uint32_t(uint8_t(name[0])) | uint32_t(uint8_t(name[1])) << 8 |
         uint32_t(uint8_t(name[2])) << 16 | uint32_t(uint8_t(name[3])) << 24;
}
constexpr uint32_t kTagKinds = tag("KIND");
constexpr uint32_t kTagThreads = tag("THRD");
constexpr uint32_t kTagMetadata = tag("META");
constexpr uint32_t kTagStrings = tag("STRS");
constexpr uint32_t kTagEvents = tag("EVNT");

std::string tag_name(uint32_t value) {
  std::string name;
  for (int i = 0; i < 4; ++i) {
    char c = static_cast<char>(value >> (8 * i));
    name += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  return name;
}

uint32_t crc32(std::string_view bytes) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xffffffffu;
  for (unsigned char byte : bytes) crc = table[(crc ^ byte) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

// ---- writing -------------------------------------------------------------------

class Out {
 public:
  void fixed(uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) data_ += static_cast<char>(value >> (8 * i));
  }
  void varint(uint64_t value) {
    while (value >= 0x80) {
      data_ += static_cast<char>((value & 0x7f) | 0x80);
      value >>= 7;
    }
    data_ += static_cast<char>(value);
  }
  void string(std::string_view text) {
    varint(text.size());
    data_ += text;
  }
  void raw(std::string_view bytes) { data_ += bytes; }
  const std::string& data() const { return data_; }

 private:
  std::string data_;
};

uint64_t zigzag(int64_t value) {
  return (static_cast<uint64_t>(value) << 1) ^ static_cast<uint64_t>(value >> 63);
}
int64_t unzigzag(uint64_t value) {
  return static_cast<int64_t>(value >> 1) ^ -static_cast<int64_t>(value & 1);
}

void add_section(Out& file, uint32_t section_tag, const Out& payload) {
  file.fixed(section_tag, 4);
  file.fixed(payload.data().size(), 8);
  file.fixed(crc32(payload.data()), 4);
  file.raw(payload.data());
}

Out encode_kinds() {
  Out out;
  out.varint(static_cast<uint64_t>(Kind::kCount));
  for (size_t i = 0; i < static_cast<size_t>(Kind::kCount); ++i) {
    const KindInfo& kind = info(static_cast<Kind>(i));
    out.string(kind.name);
    out.varint(kind.args.size());
    for (std::string_view arg : kind.args) out.string(arg);
  }
  return out;
}

Out encode_threads(const Snapshot& snapshot) {
  Out out;
  out.varint(snapshot.threads.size());
  for (const ThreadInfo& thread : snapshot.threads) {
    out.varint(thread.id);
    out.varint(thread.overwritten);
    out.string(thread.name);
  }
  return out;
}

Out encode_metadata(const Metadata& metadata) {
  Out out;
  out.varint(metadata.size());
  for (const auto& [key, value] : metadata) {
    out.string(key);
    out.string(value);
  }
  return out;
}

Out encode_strings(const std::vector<std::string>& strings) {
  Out out;
  out.varint(strings.size());
  for (const std::string& text : strings) out.string(text);
  return out;
}

// Per event: zigzag time delta, thread, kind, flags, a mask of the non-zero
// arguments, then those arguments. Most arguments are small (gfns, counts)
// or zero, so an event takes about 12 bytes instead of 48.
Out encode_events(const std::vector<Event>& events) {
  Out out;
  out.varint(events.size());
  uint64_t previous = 0;
  for (const Event& event : events) {
    out.varint(zigzag(static_cast<int64_t>(event.ts_ns - previous)));
    previous = event.ts_ns;
    out.varint(event.thread);
    out.varint(static_cast<uint64_t>(event.kind));
    out.varint(event.flags);
    uint64_t mask = 0;
    for (size_t i = 0; i < event.args.size(); ++i) mask |= uint64_t{event.args[i] != 0} << i;
    out.varint(mask);
    for (uint64_t arg : event.args) {
      if (arg != 0) out.varint(arg);
    }
  }
  return out;
}

// ---- reading -------------------------------------------------------------------

class In {
 public:
  In(std::string_view bytes, size_t base, std::string source, std::string section)
      : bytes_(bytes), base_(base), source_(std::move(source)), section_(std::move(section)) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw_bad_input(fmt::format("{}: {}", source_, what));
  }
  [[noreturn]] void truncated() const {
    fail(
        fmt::format("truncated at byte {} (in section {}): the file is cut short or corrupt; "
                    "record the trace again",
                    base_ + pos_, section_));
  }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= bytes_.size()) truncated();
      uint8_t byte = static_cast<uint8_t>(bytes_[pos_++]);
      value |= uint64_t{byte & 0x7fu} << shift;
      if (!(byte & 0x80)) return value;
    }
    fail(fmt::format("bad number at byte {} (in section {}): the file is corrupt", base_ + pos_,
                     section_));
  }
  std::string string() {
    uint64_t size = varint();
    if (size > bytes_.size() - pos_) truncated();
    std::string text(bytes_.substr(pos_, size));
    pos_ += size;
    return text;
  }
  // A count of items that take at least min_bytes each: a corrupt count must
  // not make the reader reserve gigabytes.
  uint64_t count(size_t min_bytes) {
    uint64_t n = varint();
    if (n > (bytes_.size() - pos_) / min_bytes) truncated();
    return n;
  }
  bool done() const { return pos_ == bytes_.size(); }
  size_t offset() const { return base_ + pos_; }
  const std::string& section() const { return section_; }

 private:
  std::string_view bytes_;
  size_t pos_ = 0;
  size_t base_;
  std::string source_;
  std::string section_;
};

uint64_t fixed(std::string_view bytes, size_t at, int size) {
  uint64_t value = 0;
  for (int i = 0; i < size; ++i) value |= uint64_t{static_cast<uint8_t>(bytes[at + i])} << (8 * i);
  return value;
}

// Maps the file's kind indexes to this build's kinds, by name.
std::vector<std::optional<Kind>> decode_kinds(In& in, TraceFile& file) {
  uint64_t count = in.count(2);
  std::vector<std::optional<Kind>> kinds;
  for (uint64_t i = 0; i < count; ++i) {
    std::string name = in.string();
    uint64_t args = in.count(1);
    for (uint64_t a = 0; a < args; ++a) in.string();
    std::optional<Kind> kind = kind_from_name(name);
    if (!kind) file.unknown_kinds.push_back(name);
    kinds.push_back(kind);
  }
  return kinds;
}

void decode_threads(In& in, TraceFile& file) {
  uint64_t count = in.count(3);
  for (uint64_t i = 0; i < count; ++i) {
    ThreadInfo thread{};
    uint64_t id = in.varint();
    if (id > UINT32_MAX) in.fail(fmt::format("thread #{}: id {} is out of range", i, id));
    thread.id = static_cast<uint32_t>(id);
    thread.overwritten = in.varint();
    thread.name = in.string();
    file.snapshot.overwritten += thread.overwritten;
    file.snapshot.threads.push_back(std::move(thread));
  }
}

void decode_metadata(In& in, TraceFile& file) {
  uint64_t count = in.count(2);
  for (uint64_t i = 0; i < count; ++i) {
    std::string key = in.string();
    file.metadata.emplace_back(std::move(key), in.string());
  }
}

void decode_strings(In& in, TraceFile& file) {
  uint64_t count = in.count(1);
  for (uint64_t i = 0; i < count; ++i) file.strings.push_back(in.string());
}

void decode_events(In& in, const std::vector<std::optional<Kind>>& kinds, TraceFile& file) {
  uint64_t count = in.count(5);
  uint64_t ts = 0;
  file.snapshot.events.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    Event event;
    ts += static_cast<uint64_t>(unzigzag(in.varint()));
    event.ts_ns = ts;
    uint64_t thread = in.varint();
    uint64_t kind = in.varint();
    uint64_t flags = in.varint();
    uint64_t mask = in.varint();
    if (thread > UINT32_MAX || flags > UINT16_MAX || mask > 0xf) {
      in.fail(fmt::format("event #{} is corrupt (thread {}, flags {}, argument mask {:#x})", i,
                          thread, flags, mask));
    }
    for (size_t a = 0; a < event.args.size(); ++a) {
      if (mask & (1u << a)) event.args[a] = in.varint();
    }
    if (kind >= kinds.size()) {
      in.fail(fmt::format("event #{}: event kind {} out of range (the kind table has {} kinds)", i,
                          kind, kinds.size()));
    }
    if (!kinds[kind]) {
      ++file.unknown_events;
      continue;
    }
    event.thread = static_cast<uint32_t>(thread);
    event.kind = *kinds[kind];
    event.flags = static_cast<uint16_t>(flags);
    file.snapshot.events.push_back(event);
  }
}

// References between sections: every event's thread is in the thread table
// and every kernel event's text is in the string table.
void check_references(const TraceFile& file, const std::string& source) {
  std::map<uint32_t, bool> known;
  for (const ThreadInfo& thread : file.snapshot.threads) known[thread.id] = true;
  for (size_t i = 0; i < file.snapshot.events.size(); ++i) {
    const Event& event = file.snapshot.events[i];
    if (event.kind == Kind::kKernel) {
      if (event.args[0] >= file.strings.size()) {
        throw_bad_input(fmt::format(
            "{}: event #{}: kernel event text {} out of range (the string table has {})", source, i,
            event.args[0], file.strings.size()));
      }
      continue;
    }
    if (!known.count(event.thread)) {
      throw_bad_input(fmt::format("{}: event #{}: thread {} is not in the thread table", source, i,
                                  event.thread));
    }
  }
}

}  // namespace

uint64_t TraceFile::start_ns() const {
  return snapshot.events.empty() ? 0 : snapshot.events.front().ts_ns;
}

std::string TraceFile::thread_name(uint32_t id) const {
  if (id == kKernelThread) return "kernel";
  for (const ThreadInfo& thread : snapshot.threads) {
    if (thread.id == id) return thread.name;
  }
  return fmt::format("thread{}", id);
}

std::optional<std::string> TraceFile::meta(std::string_view key) const {
  for (const auto& [name, value] : metadata) {
    if (name == key) return value;
  }
  return std::nullopt;
}

TraceFile make_trace_file(Snapshot snapshot, Metadata metadata) {
  TraceFile file;
  file.snapshot = std::move(snapshot);
  file.metadata = std::move(metadata);
  return file;
}

std::string encode_trace(const TraceFile& file) {
  Out out;
  out.raw(kMagic);
  out.fixed(kFileVersion, 4);
  out.fixed(5, 4);
  add_section(out, kTagKinds, encode_kinds());
  add_section(out, kTagThreads, encode_threads(file.snapshot));
  add_section(out, kTagMetadata, encode_metadata(file.metadata));
  add_section(out, kTagStrings, encode_strings(file.strings));
  add_section(out, kTagEvents, encode_events(file.snapshot.events));
  return out.data();
}

TraceFile decode_trace(std::string_view bytes, const std::string& source) {
  if (bytes.size() < kHeaderBytes) {
    if (bytes.size() >= kMagic.size() && bytes.substr(0, kMagic.size()) != kMagic) {
      throw_bad_input(fmt::format("{}: not an sptelab trace (bad magic)", source));
    }
    throw_bad_input(fmt::format("{}: truncated at byte {}: the header needs {} bytes", source,
                                bytes.size(), kHeaderBytes));
  }
  if (bytes.substr(0, kMagic.size()) != kMagic) {
    throw_bad_input(fmt::format(
        "{}: not an sptelab trace (bad magic; 'sptelab run --trace FILE' writes one)", source));
  }
  TraceFile file;
  file.version = static_cast<uint32_t>(fixed(bytes, 8, 4));
  if (file.version != kFileVersion) {
    throw_bad_input(fmt::format("{}: unsupported version {} (this sptelab reads version {})",
                                source, file.version, kFileVersion));
  }
  uint64_t sections = fixed(bytes, 12, 4);
  size_t at = kHeaderBytes;
  std::vector<std::optional<Kind>> kinds;
  bool have_kinds = false, have_threads = false, have_events = false;
  for (uint64_t s = 0; s < sections; ++s) {
    if (bytes.size() - at < kSectionHeaderBytes) {
      throw_bad_input(fmt::format("{}: truncated at byte {}: section {} of {} is missing", source,
                                  bytes.size(), s + 1, sections));
    }
    uint32_t section_tag = static_cast<uint32_t>(fixed(bytes, at, 4));
    uint64_t length = fixed(bytes, at + 4, 8);
    uint32_t crc = static_cast<uint32_t>(fixed(bytes, at + 12, 4));
    std::string name = tag_name(section_tag);
    size_t payload_at = at + kSectionHeaderBytes;
    if (length > bytes.size() - payload_at) {
      throw_bad_input(
          fmt::format("{}: truncated at byte {}: section {} says {} bytes but only {} remain",
                      source, bytes.size(), name, length, bytes.size() - payload_at));
    }
    std::string_view payload = bytes.substr(payload_at, length);
    if (crc32(payload) != crc) {
      throw_bad_input(fmt::format(
          "{}: section {} at byte {} is corrupt (checksum mismatch); record the trace again",
          source, name, at));
    }
    In in(payload, payload_at, source, name);
    if (section_tag == kTagKinds) {
      kinds = decode_kinds(in, file);
      have_kinds = true;
    } else if (section_tag == kTagThreads) {
      decode_threads(in, file);
      have_threads = true;
    } else if (section_tag == kTagMetadata) {
      decode_metadata(in, file);
    } else if (section_tag == kTagStrings) {
      decode_strings(in, file);
    } else if (section_tag == kTagEvents) {
      if (!have_kinds) in.fail("section EVNT comes before the kind table (KIND)");
      decode_events(in, kinds, file);
      have_events = true;
    } else {
      at = payload_at + length;  // a newer writer's section: skip it
      continue;
    }
    if (!in.done()) {
      in.fail(fmt::format("section {} has {} bytes of unexpected data at byte {}", name,
                          payload_at + length - in.offset(), in.offset()));
    }
    at = payload_at + length;
  }
  if (at != bytes.size()) {
    throw_bad_input(fmt::format("{}: {} bytes of unexpected data after the last section at byte {}",
                                source, bytes.size() - at, at));
  }
  for (auto [present, what] : {std::pair{have_kinds, "KIND (the kind table)"},
                               std::pair{have_threads, "THRD (the thread table)"},
                               std::pair{have_events, "EVNT (the events)"}}) {
    if (!present) throw_bad_input(fmt::format("{}: section {} is missing", source, what));
  }
  check_references(file, source);
  return file;
}

void write_trace_file(const std::string& path, const Snapshot& snapshot, const Metadata& metadata) {
  TraceFile file;
  file.snapshot = snapshot;
  file.metadata = metadata;
  write_trace_file(path, file);
}

void write_trace_file(const std::string& path, const TraceFile& file) {
  // Whole or not at all: a full disk or a signal never leaves a truncated
  // trace where a good one was.
  write_file_atomically(path, encode_trace(file), "trace");
}

TraceFile read_trace_file(const std::string& path) {
  // A directory, FIFO or device is refused before anything is read, and the
  // header before the rest of the file.
  uint64_t size = 0;
  int fd = open_input_file(path, "the trace", kMaxTraceBytes, size);
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  std::string header = read_bytes(fd, 0, std::min<uint64_t>(size, kHeaderBytes), path, "the trace");
  if (header.size() < kHeaderBytes || header.substr(0, kMagic.size()) != kMagic) {
    return decode_trace(header, path);  // says what is wrong
  }
  return decode_trace(read_bytes(fd, 0, size, path, "the trace"), path);
}

}  // namespace sptelab::trace
