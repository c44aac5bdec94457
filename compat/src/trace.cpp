#include "trace.hpp"

#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "trace_format.hpp"

namespace kqcompat {
namespace {

// One write per line, so lines from several threads do not interleave.
void emit(int kq, const char* what, const std::string& text) {
  const int saved_errno = errno;
  const std::string line = "kevent(kq=" + std::to_string(kq) + ") " + what + " " + text + "\n";
  [[maybe_unused]] const auto written = write(STDERR_FILENO, line.data(), line.size());
  errno = saved_errno;
}

bool tracing_asked() {
  const char* value = std::getenv("KQLAB_TRACE");
  return value && *value && std::strcmp(value, "0") != 0;
}

}  // namespace

const bool tracing = tracing_asked();

// Each line is "kevent(kq=N) WHAT  TEXT", WHAT one of call, change, event, receipt, returns, fails, padded to one
// width.
//
// "call    changes=2 events=64 timeout=none at=5321.104233": how many changes and event slots the call brings, how
// long it may wait, and when it began, in seconds of CLOCK_MONOTONIC. Without it, two calls that bring no changes
// could not be told apart in the trace, nor the time a program slept in a call from the time it spent elsewhere.
void print_call(int kq, int nchanges, int nevents, const struct timespec* timeout) {
  struct timespec now {};
  clock_gettime(CLOCK_MONOTONIC, &now);
  char waits[48] = "none";
  if (timeout) std::snprintf(waits, sizeof waits, "%lld.%06lds", static_cast<long long>(timeout->tv_sec),
                             timeout->tv_nsec / 1000);
  char text[160];
  std::snprintf(text, sizeof text, "changes=%d events=%d timeout=%s at=%lld.%06ld", nchanges, nevents, waits,
                static_cast<long long>(now.tv_sec), now.tv_nsec / 1000);
  emit(kq, "call   ", text);
}

void print_change(int kq, const struct kevent& change) { emit(kq, "change ", format::event(change)); }

int print_result(int kq, const struct kevent* events, int count) {
  if (count == 0) emit(kq, "returns", "0 (timeout)");
  for (int i = 0; i < count; ++i) {
    const bool answers_a_change = events[i].flags & EV_ERROR;
    emit(kq, answers_a_change ? "receipt" : "event  ",
         answers_a_change ? format::receipt(events[i]) : format::event(events[i]));
  }
  return count;
}

int print_failure(int kq, int error) {
  emit(kq, "fails  ", std::string(strerrorname_np(error) ? strerrorname_np(error) : "?") + " (" + std::strerror(error) + ")");
  errno = error;
  return -1;
}

}  // namespace kqcompat
