#include "trace/kernel.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/core.h>

namespace sptelab::trace {
namespace {

constexpr int kPollMs = 50;
constexpr uint64_t kNoGfn = ~uint64_t{0};

bool parse_pid(std::string_view text, int& pid) {
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), pid);
  return error == std::errc() && end == text.data() + text.size() && pid > 0;
}

// Where sptelab mounts tracefs when nobody has: "PREFIX-PID-XXXXXX" (older
// builds made "PREFIX-XXXXXX", without the PID).
constexpr std::string_view kOwnMountPrefix = "/tmp/sptelab-tracefs-";

bool is_own_mount(std::string_view dir) {
  return dir.substr(0, kOwnMountPrefix.size()) == kOwnMountPrefix;
}

// The tracefs mount points in /proc/mounts, in its order.
std::vector<std::string> tracefs_mounts() {
  std::vector<std::string> dirs;
  std::ifstream mounts("/proc/mounts");
  std::string device, dir, type;
  std::string rest;
  while (mounts >> device >> dir >> type) {
    std::getline(mounts, rest);
    if (type == "tracefs") dirs.push_back(dir);
  }
  return dirs;
}

// The system's tracefs, not another sptelab process's private mount: that
// one is unmounted when its owner ends, perhaps in the middle of our run.
std::optional<std::string> find_tracefs_mount() {
  for (const std::string& dir : tracefs_mounts()) {
    if (!is_own_mount(dir)) return dir;
  }
  return std::nullopt;
}

bool process_is_gone(int pid) {
  return pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH;
}

// Whether some process has a file or its working directory under `dir`.
bool in_use(const std::string& dir) {
  const std::string inside = dir + "/";
  auto points_inside = [&](const std::string& link) {
    char target[4096];
    ssize_t length = readlink(link.c_str(), target, sizeof(target));
    if (length <= 0) return false;
    std::string_view text(target, static_cast<size_t>(length));
    return text == dir || text.substr(0, inside.size()) == inside;
  };
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return true;  // cannot tell: leave it
  bool used = false;
  while (dirent* process = readdir(proc)) {
    if (!std::isdigit(static_cast<unsigned char>(process->d_name[0]))) continue;
    const std::string base = fmt::format("/proc/{}", process->d_name);
    used = points_inside(base + "/cwd");
    if (DIR* fds = opendir((base + "/fd").c_str())) {
      while (dirent* fd = readdir(fds)) {
        if (fd->d_name[0] != '.' && points_inside(base + "/fd/" + fd->d_name)) used = true;
      }
      closedir(fds);
    }
    if (used) break;
  }
  closedir(proc);
  return used;
}

// A mount of sptelab's whose owner cannot unmount it any more: the PID in
// its name is gone, or (a name without one) nothing has a file open in it.
bool is_stale_own_mount(const std::string& dir) {
  if (!is_own_mount(dir)) return false;
  std::string_view rest = std::string_view(dir).substr(kOwnMountPrefix.size());
  size_t dash = rest.find('-');
  int pid = 0;
  if (dash != std::string_view::npos && parse_pid(rest.substr(0, dash), pid)) {
    return process_is_gone(pid);
  }
  return !in_use(dir);
}

// Writes a tracefs control file; the error text if it fails.
std::optional<std::string> write_control(const std::string& path, std::string_view value) {
  int fd = open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return fmt::format("cannot open {}: {}", path, std::strerror(errno));
  ssize_t written = write(fd, value.data(), value.size());
  int error = errno;
  close(fd);
  if (written != static_cast<ssize_t>(value.size())) {
    return fmt::format("cannot write '{}' to {}: {}", value, path, std::strerror(error));
  }
  return std::nullopt;
}

bool exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::vector<std::string> this_process_tids() {
  std::vector<std::string> tids;
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return tids;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') tids.emplace_back(entry->d_name);
  }
  closedir(dir);
  return tids;
}

template <typename T>
bool parse_number(std::string_view text, T& value, int base = 10) {
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  return error == std::errc() && end == text.data() + text.size() && !text.empty();
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\n')) {
    text.remove_suffix(1);
  }
  return text;
}

// The guest frame a kernel event is about, where its fields say so in the
// gfn space of sptelab's own events: kvm_mmu_set_spte and
// kvm_mmu_spte_requested print "gfn HEX"; kvm_mmio prints "gpa 0xHEX".
uint64_t gfn_of(std::string_view name, std::string_view fields) {
  auto hex_after = [&](std::string_view key) -> std::optional<uint64_t> {
    size_t at = fields.find(key);
    if (at == std::string_view::npos) return std::nullopt;
    std::string_view rest = fields.substr(at + key.size());
    if (rest.substr(0, 2) == "0x") rest.remove_prefix(2);
    size_t len = 0;
    while (len < rest.size() && std::isxdigit(static_cast<unsigned char>(rest[len]))) ++len;
    uint64_t value = 0;
    if (!parse_number(rest.substr(0, len), value, 16)) return std::nullopt;
    return value;
  };
  if (name == "kvm_mmu_set_spte" || name == "kvm_mmu_spte_requested") {
    return hex_after("gfn ").value_or(kNoGfn);
  }
  if (name == "kvm_mmio") {
    if (auto gpa = hex_after("gpa ")) return *gpa >> 12;
  }
  return kNoGfn;
}

std::string metadata_value(const TraceFile& file, const std::string& key) {
  return file.meta(key).value_or("");
}

}  // namespace

std::vector<std::string> default_kernel_events() {
  return {"kvm:kvm_exit",
          "kvm:kvm_userspace_exit",
          "kvm:kvm_mmio",
          "kvm:kvm_page_fault",
          "kvm:kvm_unmap_hva_range",
          "kvm:kvm_age_hva",
          "kvm:kvm_test_age_hva",
          "kvmmmu:kvm_mmu_set_spte",
          "kvmmmu:kvm_mmu_spte_requested",
          "kvmmmu:kvm_mmu_prepare_zap_page",
          "kvmmmu:kvm_mmu_zap_all_fast",
          "kvmmmu:fast_page_fault",
          "kvmmmu:kvm_tdp_mmu_spte_changed"};
}

std::optional<KernelLine> parse_kernel_line(std::string_view line) {
  // "<comm>-<pid> [<cpu>] <flags> <secs>.<usecs>: <name>: <fields>"; comm
  // may hold spaces and dashes, so the cpu field "[ddd]" anchors the parse.
  size_t open = std::string_view::npos;
  size_t close = 0;
  for (size_t at = line.find(" ["); at != std::string_view::npos; at = line.find(" [", at + 1)) {
    size_t end = line.find(']', at);
    if (end == std::string_view::npos) return std::nullopt;
    std::string_view digits = line.substr(at + 2, end - at - 2);
    uint32_t cpu = 0;
    if (parse_number(digits, cpu)) {
      open = at;
      close = end;
      break;
    }
  }
  if (open == std::string_view::npos) return std::nullopt;
  KernelLine out;
  parse_number(line.substr(open + 2, close - open - 2), out.cpu);
  std::string_view task = trim(line.substr(0, open));
  size_t dash = task.rfind('-');
  if (dash == std::string_view::npos || !parse_number(task.substr(dash + 1), out.pid)) {
    return std::nullopt;
  }
  out.comm = std::string(task.substr(0, dash));
  // After the cpu: optional flags, then the timestamp ending in ':'.
  std::string_view rest = line.substr(close + 1);
  while (true) {
    rest = trim(rest);
    size_t space = rest.find(' ');
    if (space == std::string_view::npos) return std::nullopt;
    std::string_view token = rest.substr(0, space);
    rest.remove_prefix(space);
    if (token.size() < 2 || token.back() != ':') continue;
    token.remove_suffix(1);
    size_t dot = token.find('.');
    uint64_t secs = 0, usecs = 0;
    if (dot == std::string_view::npos || !parse_number(token.substr(0, dot), secs) ||
        !parse_number(token.substr(dot + 1), usecs)) {
      continue;
    }
    out.ts_ns = secs * 1000000000ull + usecs * 1000ull;
    break;
  }
  rest = trim(rest);
  size_t colon = rest.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  out.name = std::string(rest.substr(0, colon));
  out.fields = std::string(trim(rest.substr(colon + 1)));
  return out;
}

std::vector<std::string> remove_stale_kernel_instances(const std::string& tracefs) {
  std::vector<std::string> removed;
  std::string instances = tracefs + "/instances";
  DIR* dir = opendir(instances.c_str());
  if (dir == nullptr) return removed;
  std::vector<std::string> names;
  while (dirent* entry = readdir(dir)) names.emplace_back(entry->d_name);
  closedir(dir);
  for (const std::string& name : names) {
    // "sptelab-PID-N", made by KernelCapture::start().
    constexpr std::string_view kPrefix = "sptelab-";
    if (name.compare(0, kPrefix.size(), kPrefix) != 0) continue;
    std::string_view rest = std::string_view(name).substr(kPrefix.size());
    size_t dash = rest.find('-');
    if (dash == std::string_view::npos) continue;
    int pid = 0;
    if (!parse_pid(rest.substr(0, dash), pid) || !process_is_gone(pid)) continue;
    std::string instance = instances + "/" + name;
    write_control(instance + "/tracing_on", "0");
    write_control(instance + "/events/enable", "0");
    if (rmdir(instance.c_str()) == 0) removed.push_back(instance);
  }
  return removed;
}

std::vector<std::string> remove_stale_tracefs_mounts() {
  std::vector<std::string> removed;
  for (const std::string& dir : tracefs_mounts()) {
    if (!is_stale_own_mount(dir)) continue;
    // Its instances are every tracefs mount's: the stale ones among them
    // go first, then the mount (lazily: a reader may still hold a file).
    remove_stale_kernel_instances(dir);
    if (umount2(dir.c_str(), MNT_DETACH) == 0) {
      rmdir(dir.c_str());
      removed.push_back(dir);
    }
  }
  return removed;
}

KernelCapture::KernelCapture(KernelCaptureOptions options) : options_(std::move(options)) {
  start();
}

KernelCapture::~KernelCapture() {
  if (!stopped_) stop();
}

void KernelCapture::start() {
  // A process killed before it could clean up (SIGKILL, a crash) leaves its
  // tracefs mount behind: remove those first, as its instances below.
  remove_stale_tracefs_mounts();
  if (auto mounted = find_tracefs_mount()) {
    tracefs_ = *mounted;
  } else {
    std::string dir = fmt::format("{}{}-XXXXXX", kOwnMountPrefix, getpid());
    if (mkdtemp(dir.data()) == nullptr) {
      trace_.problem =
          fmt::format("cannot make a directory to mount tracefs on: {}", std::strerror(errno));
      return;
    }
    if (mount("nodev", dir.c_str(), "tracefs", 0, nullptr) != 0) {
      trace_.problem = fmt::format(
          "tracefs is not mounted and mounting it failed: {} (run as root, or mount it: "
          "mount -t tracefs nodev /sys/kernel/tracing)",
          std::strerror(errno));
      rmdir(dir.c_str());
      return;
    }
    mount_dir_ = tracefs_ = dir;
  }
  // Stale instances of killed processes are still tracing into their
  // buffers: remove them too.
  remove_stale_kernel_instances(tracefs_);
  static std::atomic<int> counter{0};
  instance_ = fmt::format("{}/instances/sptelab-{}-{}", tracefs_, getpid(), counter++);
  if (mkdir(instance_.c_str(), 0755) != 0) {
    trace_.problem =
        fmt::format("cannot create the tracefs instance {}: {}", instance_, std::strerror(errno));
    instance_.clear();
    cleanup();
    return;
  }
  std::vector<std::optional<std::string>> errors = {
      write_control(instance_ + "/trace_clock", "mono"),
      write_control(instance_ + "/buffer_size_kb", std::to_string(options_.buffer_kb)),
  };
  if (options_.this_process_only) {
    errors.push_back(write_control(instance_ + "/options/event-fork", "1"));
    std::string tids;
    for (const std::string& tid : this_process_tids()) tids += tid + " ";
    errors.push_back(write_control(instance_ + "/set_event_pid", tids));
  }
  for (const auto& error : errors) {
    if (error) {
      trace_.problem = *error;
      cleanup();
      return;
    }
  }
  for (const std::string& event : options_.events) {
    size_t colon = event.find(':');
    if (colon == std::string::npos) {
      trace_.missing.push_back(event);
      continue;
    }
    std::string system = event.substr(0, colon), name = event.substr(colon + 1);
    std::string enable = fmt::format("{}/events/{}/{}/enable", instance_, system, name);
    if (!exists(enable) || write_control(enable, "1")) {
      trace_.missing.push_back(event);
      continue;
    }
    trace_.enabled.push_back(event);
    systems_[name] = system;
  }
  if (trace_.enabled.empty()) {
    trace_.problem = "none of the kvm/kvmmmu tracepoints exists here (is the kvm module loaded?)";
    cleanup();
    return;
  }
  pipe_fd_ = open((instance_ + "/trace_pipe").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (pipe_fd_ < 0) {
    trace_.problem = fmt::format("cannot open {}/trace_pipe: {}", instance_, std::strerror(errno));
    cleanup();
    return;
  }
  active_ = true;
  reader_ = std::thread([this] { reader_main(); });
}

void KernelCapture::reader_main() {
  while (!stop_reader_.load(std::memory_order_acquire)) {
    pollfd fd{pipe_fd_, POLLIN, 0};
    if (poll(&fd, 1, kPollMs) > 0) drain();
  }
}

// Reads what trace_pipe has now (it is non-blocking) and parses whole lines.
void KernelCapture::drain() {
  char buffer[65536];
  while (true) {
    ssize_t got = read(pipe_fd_, buffer, sizeof buffer);
    if (got <= 0) return;
    partial_.append(buffer, static_cast<size_t>(got));
    size_t begin = 0;
    for (size_t nl = partial_.find('\n'); nl != std::string::npos;
         nl = partial_.find('\n', begin)) {
      parse_line(std::string_view(partial_).substr(begin, nl - begin));
      begin = nl + 1;
    }
    partial_.erase(0, begin);
  }
}

void KernelCapture::parse_line(std::string_view line) {
  // trace_pipe reports a buffer overrun in-line: "CPU:3 [LOST 12 EVENTS]".
  if (size_t lost = line.find("[LOST "); lost != std::string_view::npos) {
    std::string_view count = line.substr(lost + 6);
    count = count.substr(0, count.find(' '));
    uint64_t n = 0;
    if (parse_number(count, n)) {
      std::lock_guard lock(mutex_);
      trace_.lost += n;
    }
    return;
  }
  std::optional<KernelLine> parsed = parse_kernel_line(line);
  if (!parsed) return;
  auto system = systems_.find(parsed->name);
  std::string text = fmt::format("{}:{}: {}", system == systems_.end() ? "?" : system->second,
                                 parsed->name, parsed->fields);
  std::lock_guard lock(mutex_);
  auto [entry, added] = string_index_.try_emplace(text, trace_.strings.size());
  if (added) trace_.strings.push_back(std::move(text));
  Event event;
  event.ts_ns = parsed->ts_ns;
  event.thread = kKernelThread;
  event.kind = Kind::kKernel;
  event.args = {entry->second, parsed->cpu, parsed->pid, gfn_of(parsed->name, parsed->fields)};
  trace_.events.push_back(event);
  trace_.tasks.try_emplace(parsed->pid, parsed->comm);
}

uint64_t KernelCapture::read_overruns() const {
  uint64_t total = 0;
  for (int cpu = 0;; ++cpu) {
    std::ifstream stats(fmt::format("{}/per_cpu/cpu{}/stats", instance_, cpu));
    if (!stats) break;
    std::string line;
    while (std::getline(stats, line)) {
      uint64_t n = 0;
      if (line.rfind("overrun: ", 0) == 0 && parse_number(trim(line.substr(9)), n)) total += n;
    }
  }
  return total;
}

KernelTrace KernelCapture::stop() {
  stopped_ = true;
  if (active_) {
    // Stop recording, then read what is left; the reader sees the rest.
    write_control(instance_ + "/tracing_on", "0");
    stop_reader_.store(true, std::memory_order_release);
    reader_.join();
    drain();
    uint64_t overruns = read_overruns();
    trace_.lost = std::max(trace_.lost, overruns);
    active_ = false;
  }
  cleanup();
  std::stable_sort(trace_.events.begin(), trace_.events.end(),
                   [](const Event& a, const Event& b) { return a.ts_ns < b.ts_ns; });
  return std::move(trace_);
}

// Undoes start(): events off, instance removed, tracefs unmounted if this
// capture mounted it. Best effort: the run must go on whatever happens.
void KernelCapture::cleanup() {
  if (pipe_fd_ >= 0) {
    close(pipe_fd_);
    pipe_fd_ = -1;
  }
  if (!instance_.empty()) {
    for (const std::string& event : trace_.enabled) {
      size_t colon = event.find(':');
      write_control(fmt::format("{}/events/{}/{}/enable", instance_, event.substr(0, colon),
                                event.substr(colon + 1)),
                    "0");
    }
    rmdir(instance_.c_str());
    instance_.clear();
  }
  if (!mount_dir_.empty()) {
    umount(mount_dir_.c_str());
    rmdir(mount_dir_.c_str());
    mount_dir_.clear();
  }
}

void merge_kernel_trace(TraceFile& file, KernelTrace kernel) {
  auto join = [](const std::vector<std::string>& items) {
    std::string out;
    for (const std::string& item : items) out += (out.empty() ? "" : ",") + item;
    return out;
  };
  if (!kernel.problem.empty()) file.metadata.emplace_back("kernel.problem", kernel.problem);
  file.metadata.emplace_back("kernel.events", join(kernel.enabled));
  if (!kernel.missing.empty()) file.metadata.emplace_back("kernel.missing", join(kernel.missing));
  file.metadata.emplace_back("kernel.lost", std::to_string(kernel.lost));
  for (const auto& [pid, comm] : kernel.tasks) {
    file.metadata.emplace_back(fmt::format("kernel.task.{}", pid), comm);
  }
  uint64_t base = file.strings.size();
  for (std::string& text : kernel.strings) file.strings.push_back(std::move(text));
  for (Event& event : kernel.events) event.args[0] += base;
  std::vector<Event>& events = file.snapshot.events;
  size_t middle = events.size();
  events.insert(events.end(), kernel.events.begin(), kernel.events.end());
  // Both halves are in time order; on equal stamps sptelab's own event first.
  std::inplace_merge(events.begin(), events.begin() + static_cast<std::ptrdiff_t>(middle),
                     events.end(),
                     [](const Event& a, const Event& b) { return a.ts_ns < b.ts_ns; });
}

std::string_view kernel_event_name(const TraceFile& file, const Event& event) {
  if (event.args[0] >= file.strings.size()) return "?";
  std::string_view text = file.strings[event.args[0]];
  size_t first = text.find(':');
  size_t second = first == std::string_view::npos ? first : text.find(':', first + 1);
  return text.substr(0, second);
}

std::string_view kernel_event_fields(const TraceFile& file, const Event& event) {
  if (event.args[0] >= file.strings.size()) return "";
  std::string_view text = file.strings[event.args[0]];
  size_t name_end = kernel_event_name(file, event).size();
  return trim(text.substr(std::min(text.size(), name_end + 1)));
}

std::string kernel_task_name(const TraceFile& file, const Event& event) {
  std::string comm = metadata_value(file, fmt::format("kernel.task.{}", event.args[2]));
  return fmt::format("{}-{}", comm.empty() ? "<...>" : comm, event.args[2]);
}

}  // namespace sptelab::trace
