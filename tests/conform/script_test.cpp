// The conform script parser: good lines normalised, every bad line refused
// with its number and what is wrong, and the default script covering every op.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "base/error.h"
#include "conform/script.h"

namespace sptelab::conform {
namespace {

using ::testing::HasSubstr;

// The message of the Error(kBadInput) that parsing `text` throws.
std::string error_of(const std::string& text) {
  try {
    parse_script(text);
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kBadInput) << error.what();
    return error.what();
  }
  ADD_FAILURE() << "parsed without an error: " << text;
  return "";
}

TEST(ConformScript, ParsesOpsCommentsAndBlankLines) {
  const Script script = parse_script(
      "# a comment\n"
      "\n"
      "touch anon 0 16   # trailing comment\n"
      "\tmprotect  memfd 0x10 4 ro\r\n"
      "mprotect memfd 16 4 rw\n"
      "punch-hole file 8 8\n"
      "munmap anon 600 8\n"
      "mmap anon 600 8\n"
      "remap memfd 32 2");
  ASSERT_EQ(script.ops.size(), 7u);
  EXPECT_EQ(script.ops[0].kind, OpKind::kTouch);
  EXPECT_EQ(script.ops[0].line, 3u);
  EXPECT_EQ(script.ops[0].text, "touch anon 0 16");
  EXPECT_EQ(script.ops[1].kind, OpKind::kMprotect);
  EXPECT_EQ(script.ops[1].slot, Slot::kMemfd);
  EXPECT_EQ(script.ops[1].first, 16u);
  EXPECT_TRUE(script.ops[1].read_only);
  EXPECT_EQ(script.ops[1].text, "mprotect memfd 16 4 ro");
  EXPECT_EQ(script.ops[1].line, 4u);
  EXPECT_FALSE(script.ops[2].read_only);
  EXPECT_EQ(script.ops[3].kind, OpKind::kPunchHole);
  EXPECT_EQ(script.ops[3].slot, Slot::kFile);
  EXPECT_EQ(script.ops[6].kind, OpKind::kRemap);
  EXPECT_EQ(script.ops[6].count, 2u);
  EXPECT_EQ(script.ops[6].line, 9u);
}

TEST(ConformScript, RefusesEachKindOfBadLineWithItsNumber) {
  EXPECT_THAT(error_of("touch anon 0 1\nfrobnicate anon 0 1"),
              HasSubstr("script line 2: unknown operation 'frobnicate'"));
  EXPECT_THAT(error_of("touch heap 0 1"), HasSubstr("script line 1: unknown slot 'heap'"));
  EXPECT_THAT(error_of("touch anon 0"), HasSubstr("script line 1: 'touch' takes SLOT FIRST COUNT"));
  EXPECT_THAT(error_of("touch anon 0 1 2"), HasSubstr("not 4 argument(s)"));
  EXPECT_THAT(error_of("mprotect anon 0 1"), HasSubstr("SLOT FIRST COUNT ro|rw"));
  EXPECT_THAT(error_of("mprotect anon 0 1 rx"), HasSubstr("ro or rw, not 'rx'"));
  EXPECT_THAT(error_of("touch anon zero 1"), HasSubstr("FIRST 'zero' is not a page number"));
  EXPECT_THAT(error_of("touch anon 0 -1"), HasSubstr("COUNT '-1' is not a page number"));
  EXPECT_THAT(error_of("touch anon 0 0"), HasSubstr("COUNT must be at least 1"));
  EXPECT_THAT(error_of("\n\ntouch file 60 8"),
              HasSubstr("script line 3: pages 60..67 are outside slot file of 64 pages"));
  EXPECT_THAT(error_of("touch anon 1024 1"), HasSubstr("outside slot anon"));
  EXPECT_THAT(error_of("punch-hole anon 0 4"), HasSubstr("punch-hole needs a file"));
  EXPECT_THAT(error_of("remap anon 0 4"), HasSubstr("remap needs a file"));
  EXPECT_THAT(error_of("remap memfd 0 1"), HasSubstr("COUNT must be at least 2"));
  EXPECT_THAT(error_of("munmap anon 0 4\ntouch anon 2 4"),
              HasSubstr("script line 2: page 2 of anon is not mapped"));
  EXPECT_THAT(error_of("mmap anon 0 4"), HasSubstr("script line 1: mmap over page 0 of anon"));
  EXPECT_THAT(error_of("mprotect file 0 4 ro\nmsync file 3 2"),
              HasSubstr("script line 2: msync writes page 3 of file, which is read-only"));
  EXPECT_THAT(error_of("mprotect anon 0 4 ro\nfork-cow anon 0 1"), HasSubstr("read-only"));
  EXPECT_THAT(error_of("# nothing\n\n"), HasSubstr("no operation"));
}

TEST(ConformScript, StateFollowsTheScript) {
  // Unmapped, then mapped back writable; read-only, then writable again;
  // a hole is punched in the file whether or not its pages are mapped.
  const Script script = parse_script(
      "munmap file 0 8\n"
      "punch-hole file 0 8\n"
      "mmap file 0 8\n"
      "touch file 0 8\n"
      "mprotect anon 0 2 ro\n"
      "mprotect anon 0 2 rw\n"
      "fork-cow anon 0 2\n");
  EXPECT_EQ(script.ops.size(), 7u);
}

TEST(ConformScript, DefaultScriptHasEveryOpAndPartialBlockSplits) {
  const Script script = parse_script(default_script());
  std::set<OpKind> kinds;
  bool partial_mprotect = false;
  bool partial_munmap = false;
  for (const ScriptOp& op : script.ops) {
    kinds.insert(op.kind);
    const bool inside_anon_block = op.slot == Slot::kAnon && op.first % 512 != 0;
    partial_mprotect |= op.kind == OpKind::kMprotect && inside_anon_block;
    partial_munmap |= op.kind == OpKind::kMunmap && inside_anon_block;
  }
  EXPECT_EQ(kinds.size(), 10u);
  EXPECT_TRUE(partial_mprotect);
  EXPECT_TRUE(partial_munmap);
}

}  // namespace
}  // namespace sptelab::conform
