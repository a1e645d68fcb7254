#include "tools/signals.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "base/interrupt.h"

namespace sptelab::tools {
namespace {

std::mutex stop_mutex;
std::function<void(int)> stop_callback;

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// stderr without stdio: the main thread may be writing through it.
void say(const std::string& text) {
  std::string_view rest = text;
  while (!rest.empty()) {
    ssize_t written = ::write(STDERR_FILENO, rest.data(), rest.size());
    if (written <= 0) return;
    rest.remove_prefix(static_cast<size_t>(written));
  }
}

void watch(sigset_t set) {
  int count = 0;
  for (;;) {
    int signal = 0;
    if (sigwait(&set, &signal) != 0) continue;
    ++count;
    std::string name = signal_name(signal);
    if (count >= 3) {
      say("sptelab: " + name + " again: exiting now, without results\n");
      _exit(interrupted_status(signal));
    }
    if (count == 2) {
      say("sptelab: " + name + ": still stopping (send it once more to exit at once)\n");
      continue;
    }
    say("sptelab: " + name + ": stopping; what has finished is reported\n");
    interrupt::request(signal);
    std::lock_guard lock(stop_mutex);
    if (stop_callback) stop_callback(signal);
  }
}

}  // namespace

void handle_stop_signals() {
  static std::once_flag once;
  std::call_once(once, [] {
    sigset_t set = stop_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread(watch, set).detach();
  });
}

OnStopSignal::OnStopSignal(std::function<void(int)> stop) {
  std::lock_guard lock(stop_mutex);
  stop_callback = std::move(stop);
  // A signal that came before this scope began is acted on now.
  if (int signal = interrupt::requested(); signal != 0 && stop_callback) stop_callback(signal);
}

OnStopSignal::~OnStopSignal() {
  std::lock_guard lock(stop_mutex);
  stop_callback = nullptr;
}

const char* signal_name(int signal) {
  switch (signal) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    default:
      return "a signal";
  }
}

int interrupted_status(int signal) {
  return 128 + signal;
}

}  // namespace sptelab::tools
