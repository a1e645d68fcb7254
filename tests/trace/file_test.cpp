// The binary trace file: round trips, compactness, and a clear Error(kBadInput)
// for every way a file can be wrong.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>

#include <fmt/core.h>

#include "base/error.h"
#include "tests/trace/builder.h"
#include "trace/export.h"
#include "trace/file.h"

namespace sptelab::trace {
namespace {

using ::testing::HasSubstr;
using testing::TraceBuilder;

TraceFile sample() {
  TraceBuilder b;
  b.thread(0, "vcpu0").thread(3, "remapper", 84);
  b.at(0, 0, Kind::kFaultBegin, {5, 1, 7, 0})
      .at(120, 3, Kind::kNotifyRangeStart, {0x7f0000005000, 0x7f0000006000, 1, 1})
      .at(250, 3, Kind::kSpteZap, {5, 0x8067, 0, 0})
      .at(251, 0, Kind::kFaultRetry, {5, 8, 1, 0})
      .at(900, 3, Kind::kNotifyRangeEnd, {0x7f0000005000, 0x7f0000006000, 1, 0})
      .at(901, 0, Kind::kCheckpoint, {~uint64_t{0}, 0x8000000000000000, 0, 0})
      .kernel(1000, "kvm:kvm_exit: vcpu 0 reason IO rip 0x1000", 1, 4242);
  b.file().snapshot.events[2].flags = 0xbeef;
  b.meta("scheme", "start-end+seq-count").meta("note", "twice").meta("note", "again");
  b.meta("kernel.task.4242", "sptelab");
  return b.file();
}

void expect_same(const TraceFile& a, const TraceFile& b) {
  ASSERT_EQ(a.snapshot.events.size(), b.snapshot.events.size());
  for (size_t i = 0; i < a.snapshot.events.size(); ++i) {
    const Event& x = a.snapshot.events[i];
    const Event& y = b.snapshot.events[i];
    EXPECT_EQ(x.ts_ns, y.ts_ns) << i;
    EXPECT_EQ(x.thread, y.thread) << i;
    EXPECT_EQ(x.kind, y.kind) << i;
    EXPECT_EQ(x.flags, y.flags) << i;
    EXPECT_EQ(x.args, y.args) << i;
  }
  ASSERT_EQ(a.snapshot.threads.size(), b.snapshot.threads.size());
  for (size_t i = 0; i < a.snapshot.threads.size(); ++i) {
    EXPECT_EQ(a.snapshot.threads[i].id, b.snapshot.threads[i].id);
    EXPECT_EQ(a.snapshot.threads[i].name, b.snapshot.threads[i].name);
    EXPECT_EQ(a.snapshot.threads[i].overwritten, b.snapshot.threads[i].overwritten);
  }
  EXPECT_EQ(a.snapshot.overwritten, b.snapshot.overwritten);
  EXPECT_EQ(a.metadata, b.metadata);
  EXPECT_EQ(a.strings, b.strings);
}

std::string error_of(std::string_view bytes) {
  try {
    decode_trace(bytes, "t.trace");
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kBadInput);
    return error.what();
  }
  ADD_FAILURE() << "decoding succeeded";
  return "";
}

// CRC-32 (IEEE), to forge files with valid checksums.
uint32_t crc32(std::string_view bytes) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char byte : bytes) {
    crc ^= byte;
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? 0xedb88320u ^ (crc >> 1) : crc >> 1;
  }
  return crc ^ 0xffffffffu;
}

uint64_t read_le(const std::string& bytes, size_t at, int size) {
  uint64_t value = 0;
  for (int i = 0; i < size; ++i) value |= uint64_t{static_cast<uint8_t>(bytes[at + i])} << (8 * i);
  return value;
}

void write_le(std::string& bytes, size_t at, uint64_t value, int size) {
  for (int i = 0; i < size; ++i) bytes[at + i] = static_cast<char>(value >> (8 * i));
}

// Offset of the section header with this tag.
size_t find_section(const std::string& bytes, std::string_view tag) {
  size_t at = 16;
  while (at < bytes.size()) {
    if (bytes.substr(at, 4) == tag) return at;
    at += 16 + read_le(bytes, at + 4, 8);
  }
  ADD_FAILURE() << "no section " << tag;
  return 0;
}

TEST(TraceFile, RoundTripKeepsEveryField) {
  TraceFile original = sample();
  TraceFile back = decode_trace(encode_trace(original), "mem");
  expect_same(original, back);
  EXPECT_EQ(back.version, kFileVersion);
  EXPECT_EQ(back.snapshot.overwritten, 84u);
  EXPECT_EQ(back.meta("scheme"), "start-end+seq-count");
  EXPECT_EQ(back.thread_name(3), "remapper");
  EXPECT_EQ(back.unknown_events, 0u);
}

TEST(TraceFile, WritesAndReadsAFile) {
  std::string path = ::testing::TempDir() + "/roundtrip.trace";
  Snapshot snapshot = sample().snapshot;
  snapshot.events.pop_back();  // the kernel event: its text lives in TraceFile::strings
  write_trace_file(path, snapshot, {{"guest", "hello"}});
  TraceFile back = read_trace_file(path);
  EXPECT_EQ(back.snapshot.events.size(), snapshot.events.size());
  EXPECT_EQ(back.meta("guest"), "hello");
  EXPECT_EQ(back.snapshot.overwritten, 84u);
  std::remove(path.c_str());
}

TEST(TraceFile, EmptyTraceRoundTrips) {
  TraceFile back = decode_trace(encode_trace(TraceFile{}), "mem");
  EXPECT_TRUE(back.snapshot.events.empty());
  EXPECT_EQ(back.start_ns(), 0u);
}

TEST(TraceFile, IsCompact) {
  TraceBuilder b;
  b.thread(1, "vcpu0");
  for (uint64_t i = 0; i < 10000; ++i) {
    b.at(i * 150, 1, Kind::kSpteInstall, {i % 64, 0, ((i % 64) << 12) | 0x67, 0});
  }
  std::string bytes = encode_trace(b.file());
  // An in-memory Event is 48 bytes; the file spends well under a third.
  EXPECT_LT(bytes.size(), 10000u * 16);
}

TEST(TraceFile, MissingFileSaysSo) {
  try {
    read_trace_file("/nonexistent/dir/x.trace");
    FAIL();
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kBadInput);
    EXPECT_THAT(error.what(), HasSubstr("cannot read the trace /nonexistent/dir/x.trace"));
  }
}

TEST(TraceFile, BadMagicIsNotATrace) {
  std::string bytes = encode_trace(sample());
  bytes[0] = 'X';
  EXPECT_THAT(error_of(bytes), HasSubstr("t.trace: not an sptelab trace (bad magic"));
  EXPECT_THAT(error_of("# sptelab text"), HasSubstr("bad magic"));
}

TEST(TraceFile, UnsupportedVersionIsNamed) {
  std::string bytes = encode_trace(sample());
  write_le(bytes, 8, 2, 4);
  EXPECT_THAT(error_of(bytes), HasSubstr("unsupported version 2 (this sptelab reads version 1)"));
}

TEST(TraceFile, EveryTruncationIsReported) {
  std::string bytes = encode_trace(sample());
  for (size_t size = 0; size < bytes.size(); ++size) {
    std::string message = error_of(std::string_view(bytes).substr(0, size));
    EXPECT_THAT(message, HasSubstr("truncated at byte")) << "cut at " << size;
  }
  EXPECT_THAT(error_of(bytes.substr(0, 10)),
              HasSubstr("truncated at byte 10: the header needs 16 bytes"));
}

TEST(TraceFile, FlippedByteIsCorrupt) {
  std::string bytes = encode_trace(sample());
  size_t events = find_section(bytes, "EVNT");
  bytes[events + 16 + 3] ^= 0x40;
  EXPECT_THAT(error_of(bytes), HasSubstr("section EVNT at byte"));
  EXPECT_THAT(error_of(bytes), HasSubstr("is corrupt (checksum mismatch)"));
}

TEST(TraceFile, TrailingDataIsReported) {
  std::string bytes = encode_trace(sample()) + "junk";
  EXPECT_THAT(error_of(bytes), HasSubstr("4 bytes of unexpected data after the last section"));
}

TEST(TraceFile, KindOutOfRangeIsReported) {
  TraceBuilder b;
  b.thread(0, "vcpu0").at(0, 0, Kind::kCheckpoint);
  b.file().snapshot.events[0].kind = static_cast<Kind>(static_cast<uint16_t>(Kind::kCount) + 3);
  EXPECT_THAT(
      error_of(encode_trace(b.file())),
      HasSubstr(fmt::format("event #0: event kind {} out of range (the kind table has {} "
                            "kinds)",
                            static_cast<int>(Kind::kCount) + 3, static_cast<int>(Kind::kCount))));
}

TEST(TraceFile, EventOfAnUnknownThreadIsReported) {
  TraceBuilder b;
  b.thread(0, "vcpu0").at(0, 0, Kind::kCheckpoint).at(5, 9, Kind::kCheckpoint);
  EXPECT_THAT(error_of(encode_trace(b.file())),
              HasSubstr("event #1: thread 9 is not in the thread table"));
}

TEST(TraceFile, KernelTextOutOfRangeIsReported) {
  TraceBuilder b;
  b.kernel(0, "kvm:kvm_exit: x", 0, 1);
  b.file().strings.clear();
  EXPECT_THAT(error_of(encode_trace(b.file())),
              HasSubstr("event #0: kernel event text 0 out of range"));
}

TEST(TraceFile, UnknownSectionsAreSkipped) {
  std::string bytes = encode_trace(sample());
  std::string payload = "from a newer sptelab";
  std::string section = "XTRA" + std::string(12, '\0') + payload;
  write_le(section, 4, payload.size(), 8);
  write_le(section, 12, crc32(payload), 4);
  bytes += section;
  write_le(bytes, 12, read_le(bytes, 12, 4) + 1, 4);
  expect_same(sample(), decode_trace(bytes, "mem"));
}

TEST(TraceFile, KindsOfANewerWriterAreCountedNotSilent) {
  // Rename "checkpoint" in the kind table, as if a newer sptelab had a kind
  // this one does not know.
  std::string bytes = encode_trace(sample());
  size_t kinds = find_section(bytes, "KIND");
  size_t length = read_le(bytes, kinds + 4, 8);
  std::string payload = bytes.substr(kinds + 16, length);
  size_t name = payload.find("checkpoint");
  ASSERT_NE(name, std::string::npos);
  payload.replace(name, 10, "checkpoinX");
  bytes.replace(kinds + 16, length, payload);
  write_le(bytes, kinds + 12, crc32(payload), 4);

  TraceFile file = decode_trace(bytes, "mem");
  EXPECT_EQ(file.unknown_events, 1u);
  EXPECT_EQ(file.unknown_kinds, std::vector<std::string>{"checkpoinX"});
  EXPECT_EQ(file.snapshot.events.size(), sample().snapshot.events.size() - 1);
  EXPECT_THAT(format_text(file),
              HasSubstr("# 1 events of kinds this sptelab does not know were skipped "
                        "(checkpoinX)"));
}

TEST(TraceFile, UnwritablePathIsBadInput) {
  try {
    write_trace_file("/nonexistent/dir/x.trace", Snapshot{});
    FAIL();
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kBadInput);
    EXPECT_THAT(error.what(), HasSubstr("cannot write the trace to /nonexistent/dir/x.trace"));
  }
}

}  // namespace
}  // namespace sptelab::trace
