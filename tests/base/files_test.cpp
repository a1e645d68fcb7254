// Input files checked before they are read; outputs written whole or not
// at all.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>

#include "base/error.h"
#include "base/files.h"

namespace sptelab {
namespace {

using ::testing::HasSubstr;

std::string temp_dir() {
  std::string pattern = ::testing::TempDir() + "/sptelab-files-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp");
  return pattern;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  while (dirent* entry = readdir(d)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  return names;
}

std::string error_of(const std::function<void()>& f, ExitStatus* status = nullptr) {
  try {
    f();
  } catch (const Error& error) {
    if (status) *status = error.status();
    return error.what();
  }
  return "";
}

TEST(OpenInputFile, RefusesWhatIsNotARegularFile) {
  std::string dir = temp_dir();
  uint64_t size = 0;
  EXPECT_THAT(error_of([&] { open_input_file(dir, "trace", 1 << 20, size); }),
              HasSubstr("is a directory"));
  EXPECT_THAT(error_of([&] { open_input_file("/dev/null", "trace", 1 << 20, size); }),
              HasSubstr("is a character device"));
  std::string fifo = dir + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_THAT(error_of([&] { open_input_file(fifo, "trace", 1 << 20, size); }),
              HasSubstr("is a FIFO"));
  std::string big = dir + "/big";
  std::ofstream(big) << "x";
  ASSERT_EQ(truncate(big.c_str(), 3 << 20), 0);
  EXPECT_THAT(error_of([&] { open_input_file(big, "trace", 1 << 20, size); }),
              HasSubstr("is 3145728 bytes; sptelab reads at most 1 MiB"));
  int fd = open_input_file(big, "trace", 4 << 20, size);
  EXPECT_EQ(size, 3u << 20);
  EXPECT_EQ(read_bytes(fd, 0, 4, big, "trace"), std::string("x\0\0\0", 4));
  close(fd);
}

TEST(WriteFileAtomically, ReplacesTheFileAndLeavesNoTemporary) {
  std::string dir = temp_dir();
  std::string path = dir + "/out.txt", other_name = dir + "/old.txt";
  std::ofstream(path) << "old";
  ASSERT_EQ(link(path.c_str(), other_name.c_str()), 0);
  write_file_atomically(path, "new contents", "output");
  EXPECT_EQ(read_all(path), "new contents");
  EXPECT_EQ(read_all(other_name), "old");  // renamed over, not rewritten in place
  EXPECT_EQ(entries(dir).size(), 2u);
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  mode_t mask = umask(0);
  umask(mask);
  EXPECT_EQ(st.st_mode & 0777, 0666 & ~mask);
}

TEST(WriteFileAtomically, BadPathsAreBadInputAndChangeNothing) {
  std::string dir = temp_dir();
  ExitStatus status = ExitStatus::kOk;
  EXPECT_THAT(
      error_of([&] { write_file_atomically(dir + "/no/such/dir/x", "x", "trace"); }, &status),
      HasSubstr("cannot write the trace to"));
  EXPECT_EQ(status, ExitStatus::kBadInput);
  EXPECT_THAT(error_of([&] { write_file_atomically(dir, "x", "trace"); }),
              HasSubstr("it is a directory"));
  EXPECT_TRUE(entries(dir).empty());
}

TEST(CheckNotInput, ComparesTheFilesNotTheNames) {
  std::string dir = temp_dir();
  std::string path = dir + "/same";
  std::ofstream(path) << "input";
  EXPECT_THAT(error_of([&] { check_not_input(path, path, "output"); }),
              HasSubstr("is the input file"));
  EXPECT_EQ(error_of([&] { check_not_input(dir + "/other", path, "output"); }), "");
  std::string alias = dir + "/alias";
  ASSERT_EQ(symlink(path.c_str(), alias.c_str()), 0);
  EXPECT_THAT(error_of([&] {
                check_not_input(alias, dir + "/../" + dir.substr(dir.rfind('/') + 1) + "/same",
                                "output");
              }),
              HasSubstr("is the input file"));
}

}  // namespace
}  // namespace sptelab
