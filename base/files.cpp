#include "base/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/core.h>

#include "base/error.h"

namespace sptelab {
namespace {

const char* file_type(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

std::string directory_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_name(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

}  // namespace

int open_input_file(const std::string& path, std::string_view what, uint64_t max_bytes,
                    uint64_t& size) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; fstat says what
  // it is before anything is read.
  Fd fd(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) {
    int error = errno;
    if (error == ELOOP) {
      throw_bad_input(
          fmt::format("cannot read {} {}: too many levels of symbolic links (a "
                      "symlink loop?)",
                      what, path));
    }
    throw_bad_input(fmt::format("cannot read {} {}: {}", what, path, std::strerror(error)));
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) {
    throw_bad_input(fmt::format("cannot read {} {}: {}", what, path, std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    throw_bad_input(
        fmt::format("{} {} is {}, not a regular file", what, path, file_type(st.st_mode)));
  }
  size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes) {
    throw_bad_input(fmt::format("{} {} is {} bytes; sptelab reads at most {} MiB", what, path, size,
                                max_bytes >> 20));
  }
  // Back to blocking reads for a regular file (O_NONBLOCK has no effect on
  // them, but do not leave it set).
  fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  return fd.release();
}

std::string read_bytes(int fd, uint64_t offset, uint64_t count, const std::string& path,
                       std::string_view what) {
  std::string bytes(count, '\0');
  uint64_t done = 0;
  while (done < count) {
    ssize_t got = pread(fd, bytes.data() + done, count - done, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_bad_input(fmt::format("reading {} {} failed: {}", what, path, std::strerror(errno)));
    }
    if (got == 0) break;  // shrank meanwhile: the parser reports the truncation
    done += static_cast<uint64_t>(got);
  }
  bytes.resize(done);
  return bytes;
}

void check_output_path(const std::string& path, std::string_view what) {
  if (path.empty()) throw_bad_input(fmt::format("the {} path is empty", what));
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    throw_bad_input(fmt::format("cannot write the {} to {}: it is a directory", what, path));
  }
  std::string dir = directory_of(path);
  if (stat(dir.c_str(), &st) != 0) {
    throw_bad_input(
        fmt::format("cannot write the {} to {}: {}: {}", what, path, dir, std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    throw_bad_input(
        fmt::format("cannot write the {} to {}: {} is not a directory", what, path, dir));
  }
  if (access(dir.c_str(), W_OK | X_OK) != 0) {
    throw_bad_input(fmt::format("cannot write the {} to {}: directory {}: {}", what, path, dir,
                                std::strerror(errno)));
  }
}

void check_not_input(const std::string& output, const std::string& input, std::string_view what) {
  struct stat out_st, in_st;
  if (stat(output.c_str(), &out_st) != 0 || stat(input.c_str(), &in_st) != 0) return;
  if (out_st.st_dev == in_st.st_dev && out_st.st_ino == in_st.st_ino) {
    throw_bad_input(fmt::format(
        "the {} {} is the input file {}: writing it would destroy the input; choose another path",
        what, output, input));
  }
}

void write_file_atomically(const std::string& path, std::string_view bytes, std::string_view what) {
  check_output_path(path, what);
  std::string temp = directory_of(path) + "/." + base_name(path) + ".tmp-XXXXXX";
  Fd fd(mkstemp(temp.data()));
  if (fd.get() < 0) {
    throw_bad_input(fmt::format("cannot write the {} to {}: {}", what, path, std::strerror(errno)));
  }
  // mkstemp makes the file 0600; give it the mode a plain create would.
  mode_t mask = umask(0);
  umask(mask);
  fchmod(fd.get(), 0666 & ~mask);
  std::string_view rest = bytes;
  int error = 0;
  while (!rest.empty() && error == 0) {
    ssize_t written = write(fd.get(), rest.data(), rest.size());
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) {
      error = written < 0 ? errno : EIO;
      break;
    }
    rest.remove_prefix(static_cast<size_t>(written));
  }
  if (error == 0 && fsync(fd.get()) != 0 && errno != EINVAL && errno != EROFS) error = errno;
  if (error == 0 && close(fd.release()) != 0) error = errno;
  if (error == 0 && rename(temp.c_str(), path.c_str()) != 0) error = errno;
  if (error != 0) {
    unlink(temp.c_str());
    throw Error(ExitStatus::kEnvironment,
                fmt::format("writing the {} to {} failed: {}; {} is unchanged", what, path,
                            std::strerror(error), path));
  }
}

}  // namespace sptelab
