// Files sptelab reads and writes on a user's behalf: inputs checked before
// they are read (a FIFO, a device or a directory is refused, not read), and
// outputs written whole or not at all (a temporary file in the same
// directory, renamed over the target), so a full disk or a signal never
// leaves a truncated file where a good one was.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sptelab {

// Opens `path` for reading if it is a regular file of at most `max_bytes`;
// returns the descriptor and sets `size`. Error(kBadInput) saying what is
// wrong otherwise: missing, a directory, a FIFO, a device, a symlink loop,
// too large. `what` names the file in messages ("guest image", "trace").
int open_input_file(const std::string& path, std::string_view what, uint64_t max_bytes,
                    uint64_t& size);

// Reads up to `count` bytes from `fd` at `offset`; Error(kBadInput) on a
// read error.
std::string read_bytes(int fd, uint64_t offset, uint64_t count, const std::string& path,
                       std::string_view what);

// Error(kBadInput) if `path` cannot be written: its directory is missing or
// not writable, or it is a directory. Checked before a long run so that
// its results are not lost to a bad output path.
void check_output_path(const std::string& path, std::string_view what);

// Error(kBadInput) if `output` names the same file as `input`.
void check_not_input(const std::string& output, const std::string& input, std::string_view what);

// Writes `bytes` to `path` atomically (temporary file in the same directory,
// then rename). Error(kBadInput) if the file cannot be created,
// Error(kEnvironment) if writing fails (e.g. the disk is full); the target
// is untouched in both cases.
void write_file_atomically(const std::string& path, std::string_view bytes, std::string_view what);

}  // namespace sptelab
