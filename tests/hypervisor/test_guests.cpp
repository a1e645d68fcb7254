#include "tests/hypervisor/test_guests.h"

#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <fstream>
#include <iterator>
#include <stdexcept>

extern char** environ;

namespace sptelab::hypervisor::testing {

std::string builtin_guest(const std::string& name) {
  return std::string(SPTELAB_TEST_BUILTIN_GUEST_DIR) + "/" + name + ".elf";
}

std::string test_guest(const std::string& name) {
  return std::string(SPTELAB_TEST_GUEST_DIR) + "/" + name + ".elf";
}

std::string sptelab_binary() {
  return SPTELAB_TEST_BINARY;
}

std::vector<std::string> readme_build_command(const std::string& source,
                                              const std::string& output) {
  const std::string guest_dir = SPTELAB_TEST_GUEST_SOURCE_DIR;
  return {SPTELAB_TEST_CC,
          "-std=gnu11",
          "-ffreestanding",
          "-nostdlib",
          "-static",
          "-fno-pie",
          "-mno-red-zone",
          "-mgeneral-regs-only",
          "-fno-stack-protector",
          "-fno-asynchronous-unwind-tables",
          "-O2",
          "-I" + guest_dir,
          "-T",
          guest_dir + "/guest.ld",
          "-Wl,--build-id=none",
          "-Wl,-z,max-page-size=4096",
          "-Wl,-z,noexecstack",
          source,
          "-o",
          output};
}

std::string make_temp_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/sptelab-test-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return pattern;
}

const std::string& external_guest() {
  static const std::string path = [] {
    std::string output = make_temp_dir() + "/external.elf";
    std::vector<std::string> command =
        readme_build_command(std::string(SPTELAB_TEST_SOURCE_DIR) + "/guests/external.c", output);
    std::vector<char*> argv;
    for (std::string& arg : command) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
      throw std::runtime_error("cannot start the C compiler " + command[0]);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw std::runtime_error("the README's guest build command failed");
    }
    return output;
  }();
  return path;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot read " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(file), {});
}

}  // namespace sptelab::hypervisor::testing
