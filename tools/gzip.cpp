#include "tools/gzip.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/core.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/error.h"

extern char** environ;

namespace sptelab::tools {
namespace {

[[noreturn]] void fail(const std::string& why) {
  throw Error(ExitStatus::kEnvironment,
              fmt::format("compressing the output with gzip failed: {}; the gzip program (Debian "
                          "package gzip) is needed for an output named *.gz",
                          why));
}

// The input goes through an unlinked temporary file, so that writing it
// and reading gzip's output cannot deadlock on two full pipes.
int temporary_input(std::string_view data) {
  const char* dir = std::getenv("TMPDIR");
  std::string path =
      std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/sptelab-gzip-XXXXXX";
  int fd = mkstemp(path.data());
  if (fd < 0) fail(fmt::format("cannot create a temporary file: {}", std::strerror(errno)));
  unlink(path.c_str());
  for (size_t done = 0; done < data.size();) {
    ssize_t written = write(fd, data.data() + done, data.size() - done);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) {
      close(fd);
      fail(fmt::format("cannot write a temporary file: {}", std::strerror(errno)));
    }
    done += static_cast<size_t>(written);
  }
  lseek(fd, 0, SEEK_SET);
  return fd;
}

std::string read_all(int fd) {
  std::string out;
  char buffer[1 << 16];
  for (;;) {
    ssize_t got = read(fd, buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    out.append(buffer, static_cast<size_t>(got));
  }
  return out;
}

}  // namespace

bool wants_gzip(std::string_view path) {
  return path.size() > 3 && path.substr(path.size() - 3) == ".gz";
}

std::string gzip_compress(std::string_view data) {
  const int input = temporary_input(data);
  int output[2];
  if (pipe2(output, O_CLOEXEC) != 0) {
    close(input);
    fail(std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, input, STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, output[1], STDOUT_FILENO);
  // -n: no name or time stamp in the header, so equal inputs give equal files.
  char* argv[] = {const_cast<char*>("gzip"), const_cast<char*>("-c"), const_cast<char*>("-n"),
                  nullptr};
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, "gzip", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  close(input);
  close(output[1]);
  if (spawned != 0) {
    close(output[0]);
    fail(fmt::format("cannot run gzip: {}", std::strerror(spawned)));
  }
  std::string compressed = read_all(output[0]);
  close(output[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fail(WIFEXITED(status) ? fmt::format("gzip exited with status {}", WEXITSTATUS(status))
                           : std::string("gzip was killed by a signal"));
  }
  return compressed;
}

}  // namespace sptelab::tools
