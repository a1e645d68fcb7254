// `sptelab conform` as a user runs it, on the recorded kernel ranges (no
// /dev/kvm or tracefs needed): exit statuses, the JSON document, the table,
// bad scripts.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "tests/hypervisor/test_guests.h"
#include "tests/tools/cli.h"

namespace sptelab::conform {
namespace {

using ::testing::HasSubstr;
using tools::testing::run_sptelab;

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = hypervisor::testing::make_temp_dir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(ConformCli, ReplayedKernelAgreesAsOneJsonDocument) {
  auto result = run_sptelab({"conform", "--kernel-from", SPTELAB_CONFORM_RECORDING, "--json"});
  EXPECT_EQ(result.status, 0) << result.err;
  ASSERT_FALSE(result.out.empty());
  EXPECT_EQ(result.out.front(), '{');
  EXPECT_THAT(result.out, HasSubstr(R"("differ": 0)"));
  EXPECT_TRUE(result.err.empty()) << result.err;
  // Valid JSON (python3's parser, where there is one).
  const std::string path = write_temp("out.json", result.out);
  const std::string check =
      "command -v python3 >/dev/null || exit 0; python3 -c 'import json,sys; "
      "json.load(open(sys.argv[1]))' '" +
      path + "'";
  EXPECT_EQ(std::system(check.c_str()), 0) << result.out;
}

TEST(ConformCli, TableFitsAHundredColumns) {
  auto result = run_sptelab({"conform", "--kernel-from", SPTELAB_CONFORM_RECORDING});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("punch-hole memfd 8 8"));
  EXPECT_THAT(result.out, HasSubstr("ops agree"));
  for (size_t start = 0, end; start < result.out.size(); start = end + 1) {
    end = result.out.find('\n', start);
    if (end == std::string::npos) end = result.out.size();
    EXPECT_LE(end - start, 100u) << result.out.substr(start, end - start);
  }
}

TEST(ConformCli, ABadScriptLineIsExitTwoWithItsNumber) {
  const std::string script = write_temp("bad.ops", "touch anon 0 4\n# fine\nmunmap anon 2 4x\n");
  auto result = run_sptelab({"conform", "--ops", script});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("script line 3: COUNT '4x' is not a page number"));
  EXPECT_TRUE(result.out.empty());
}

TEST(ConformCli, BadUsageIsExitTwo) {
  EXPECT_EQ(run_sptelab({"conform", "--era", "1.0"}).status, 2);
  EXPECT_EQ(run_sptelab({"conform", "extra"}).status, 2);
  EXPECT_EQ(run_sptelab({"conform", "--ops", "/nonexistent/script"}).status, 2);
  EXPECT_EQ(run_sptelab(
                {"conform", "--kernel-from", SPTELAB_CONFORM_RECORDING, "--save-kernel", "/tmp/x"})
                .status,
            2);
  // A recording of another script.
  const std::string script = write_temp("other.ops", "touch anon 0 4\n");
  auto other =
      run_sptelab({"conform", "--ops", script, "--kernel-from", SPTELAB_CONFORM_RECORDING});
  EXPECT_EQ(other.status, 2);
  EXPECT_THAT(other.err, HasSubstr("recording line"));
}

TEST(ConformCli, NoKvmIsExitThreeAndSaysSo) {
  auto result = run_sptelab({"conform"}, {{"SPTELAB_KVM_DEVICE", "/nonexistent/kvm"}});
  EXPECT_EQ(result.status, 3);
  EXPECT_THAT(result.err, HasSubstr("/nonexistent/kvm"));
}

}  // namespace
}  // namespace sptelab::conform
