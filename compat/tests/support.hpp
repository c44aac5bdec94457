// Small helpers so each test case reads like the sentence of kqueue(2) it checks. Portable: nothing here knows
// whether kqueue is native or kqlab's Linux layer.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "kevent_format.hpp"

namespace kqtest {

// Platform facts for skips, as data with reasons.
#if defined(__linux__)
constexpr bool kLinuxLayer = true;
#else
constexpr bool kLinuxLayer = false;
#endif
#if defined(__APPLE__)
constexpr bool kMacOS = true;
#else
constexpr bool kMacOS = false;
#endif

// Names only FreeBSD has (macOS numbers its timer units differently and has NOTE_ABSOLUTE, with other semantics,
// instead of NOTE_ABSTIME): the cases that use them are skipped where the name is missing; these keep them
// compiling everywhere.
#if defined(NOTE_MSECONDS)
constexpr bool kHaveMSeconds = true;
constexpr unsigned kNoteMSeconds = NOTE_MSECONDS;
#else
constexpr bool kHaveMSeconds = false;
constexpr unsigned kNoteMSeconds = 0;
#endif
#if defined(NOTE_ABSTIME)
constexpr bool kHaveAbstime = true;
constexpr unsigned kNoteAbstime = NOTE_ABSTIME;
#else
constexpr bool kHaveAbstime = false;
constexpr unsigned kNoteAbstime = 0;
#endif
#if defined(NOTE_FILE_POLL)
constexpr bool kHaveFilePoll = true;
constexpr unsigned kNoteFilePoll = NOTE_FILE_POLL;
#else
constexpr bool kHaveFilePoll = false;
constexpr unsigned kNoteFilePoll = 0;
#endif
// NOTE_EXIT's data is the wait status on FreeBSD (and on Linux); macOS fills it only when NOTE_EXITSTATUS is
// asked for too.
#if defined(NOTE_EXITSTATUS)
constexpr unsigned int kNoteExitStatus = NOTE_EXIT | NOTE_EXITSTATUS;
#else
constexpr unsigned int kNoteExitStatus = NOTE_EXIT;
#endif

// A descriptor closed when the test ends.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  operator int() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// A regular file in the temporary directory, removed when the test ends. `writer` is open for reading and
// writing; open more descriptors on `path` to watch it.
struct TempFile {
  std::string path;
  Fd writer;

  TempFile() {
    const char* dir = std::getenv("TMPDIR");
    path = std::string(dir && *dir ? dir : "/tmp") + "/kqlab-test-XXXXXX";
    writer = Fd(mkstemp(path.data()));
    REQUIRE_MESSAGE(writer.get() >= 0, "mkstemp " << path << ": " << std::strerror(errno));
  }
  ~TempFile() { unlink(path.c_str()); }

  Fd open_for_reading() const {
    Fd fd(open(path.c_str(), O_RDONLY));
    REQUIRE(fd.get() >= 0);
    return fd;
  }
};

// Descriptors open in the process (numbers below 4096), to show that something costs none.
inline int open_descriptors() {
  int count = 0;
  for (int fd = 0; fd < 4096; ++fd) count += fcntl(fd, F_GETFD) != -1;
  return count;
}

// The open descriptors whose /proc/self/fd link reads `target` (none where there is no /proc, as on BSD).
inline std::vector<int> descriptors_named(const std::string& target) {
  std::vector<int> found;
  for (int fd = 0; fd < 4096; ++fd) {
    char link[64], path[32];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    const ssize_t length = readlink(path, link, sizeof link - 1);
    if (length > 0 && std::string(link, static_cast<size_t>(length)) == target) found.push_back(fd);
  }
  return found;
}

// Milliseconds on a steady clock since `start`.
using Clock = std::chrono::steady_clock;
inline int64_t ms_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

inline Fd new_queue() {
  Fd kq(kqueue());
  REQUIRE(kq.get() >= 0);
  return kq;
}

struct Pair {
  Fd a, b;
};

inline Pair socket_pair(int type = SOCK_STREAM) {
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, type, 0, fds) == 0);
  return {Fd(fds[0]), Fd(fds[1])};
}

// pipe: a = read end, b = write end.
inline Pair pipe_pair() {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  return {Fd(fds[0]), Fd(fds[1])};
}

// A TCP listener on 127.0.0.1, port chosen by the kernel.
inline Fd tcp_listener(int backlog = 16) {
  Fd fd(socket(AF_INET, SOCK_STREAM, 0));
  REQUIRE(fd.get() >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(listen(fd, backlog) == 0);
  return fd;
}

inline Fd tcp_connect(int listener) {
  sockaddr_in address{};
  socklen_t size = sizeof address;
  REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &size) == 0);
  Fd fd(socket(AF_INET, SOCK_STREAM, 0));
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&address), size) == 0);
  return fd;
}

inline struct kevent change(uintptr_t ident, short filter, unsigned short flags, unsigned fflags = 0,
                            int64_t data = 0, void* udata = nullptr) {
  struct kevent event;
  EV_SET(&event, ident, filter, flags, fflags, data, udata);
  return event;
}

// Applies changes with no event list: any failing change makes kevent return -1.
inline int apply(int kq, std::vector<struct kevent> changes) {
  return kevent(kq, changes.data(), static_cast<int>(changes.size()), nullptr, 0, nullptr);
}

inline void add(int kq, uintptr_t ident, short filter, unsigned short flags = 0, void* udata = nullptr) {
  const struct kevent wanted = change(ident, filter, EV_ADD | flags, 0, 0, udata);
  INFO("registering " << kqlab::describe(wanted));
  REQUIRE(apply(kq, {wanted}) == 0);
}

// An EVFILT_TIMER of `period` units (milliseconds unless `fflags` names a unit).
inline void add_timer(int kq, uintptr_t ident, int64_t period, unsigned fflags = 0, unsigned short flags = 0) {
  const struct kevent wanted = change(ident, EVFILT_TIMER, EV_ADD | flags, fflags, period);
  INFO("registering " << kqlab::describe(wanted));
  REQUIRE(apply(kq, {wanted}) == 0);
}

// NOTE_TRIGGER on an existing EVFILT_USER event, with `fflags` (a NOTE_FF* operation) and `data`.
inline void trigger(int kq, uintptr_t ident, unsigned fflags = NOTE_FFNOP, int64_t data = 0) {
  REQUIRE(apply(kq, {change(ident, EVFILT_USER, 0, NOTE_TRIGGER | fflags, data)}) == 0);
}

// Collects what one kevent() call returns within `ms` milliseconds.
inline std::vector<struct kevent> wait(int kq, int ms = 0, int room = 16) {
  std::vector<struct kevent> events(room);
  timespec timeout{ms / 1000, (ms % 1000) * 1'000'000L};
  const int n = kevent(kq, nullptr, 0, events.data(), room, &timeout);
  REQUIRE_MESSAGE(n >= 0, "kevent failed: " << std::strerror(errno));
  events.resize(n);
  return events;
}

inline std::string describe_all(const std::vector<struct kevent>& events) {
  std::string text;
  for (const auto& event : events) text += "\n  " + kqlab::describe(event);
  return text.empty() ? " (none)" : text;
}

// The one event `kq` returns for (ident, filter) within `ms`; fails when there is none or more than one.
inline struct kevent expect_event(int kq, uintptr_t ident, short filter, int ms = 1000) {
  const auto events = wait(kq, ms);
  INFO("returned:" << describe_all(events));
  int found = 0;
  struct kevent match{};
  for (const auto& event : events) {
    if (event.ident == ident && event.filter == filter) {
      ++found;
      match = event;
    }
  }
  REQUIRE(found == 1);
  return match;
}

inline void expect_nothing(int kq, int ms = 50) {
  const auto events = wait(kq, ms);
  INFO("returned:" << describe_all(events));
  CHECK(events.empty());
}

inline void write_bytes(int fd, size_t n, char fill = 'x') {
  const std::string text(n, fill);
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(n));
}

inline size_t read_bytes(int fd, size_t n) {
  std::string buffer(n, '\0');
  const ssize_t got = read(fd, buffer.data(), n);
  REQUIRE(got >= 0);
  return static_cast<size_t>(got);
}

// A child process running `body`, which ends with _exit(body()): no doctest macro may run in there. The child is
// killed and reaped when the test ends, if the test did not reap it.
class Child {
 public:
  template <typename Body>
  explicit Child(Body body) : pid_(fork_flushed()) {
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) _exit(body());
  }
  ~Child() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }

  // Its status once it has exited (or stopped, with WUNTRACED), within `ms`; a test failure after that.
  int wait(int options = 0, int ms = 5000) {
    for (int waited = 0;; waited += 2) {
      int status = 0;
      const pid_t got = waitpid(pid_, &status, options | WNOHANG);
      REQUIRE_MESSAGE(got >= 0, "waitpid: " << std::strerror(errno));
      if (got == pid_) {
        if (WIFEXITED(status) || WIFSIGNALED(status)) pid_ = -1;
        return status;
      }
      REQUIRE_MESSAGE(waited < ms, "child " << pid_ << " still running after " << ms << " ms");
      usleep(2000);
    }
  }

  // stdio buffers flushed first, so that the child cannot print them again.
  static pid_t fork_flushed() {
    std::fflush(nullptr);
    return fork();
  }

  // The exit code, or 1000 + the signal that killed it.
  int wait_exit_code(int ms = 5000) {
    const int status = wait(0, ms);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
  }

 private:
  pid_t pid_;
};

// The disposition of a signal, put back when the test ends.
class KeepDisposition {
 public:
  explicit KeepDisposition(int sig) : sig_(sig) { REQUIRE(sigaction(sig, nullptr, &saved_) == 0); }
  ~KeepDisposition() { sigaction(sig_, &saved_, nullptr); }
  KeepDisposition(const KeepDisposition&) = delete;
  KeepDisposition& operator=(const KeepDisposition&) = delete;

 private:
  int sig_;
  struct sigaction saved_;
};

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/kqlab-test.XXXXXX";
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The returned flags, less what FreeBSD strips and macOS echoes (EV_ADD, EV_ENABLE): the portable part.
inline unsigned short portable_flags(const struct kevent& event) {
  return event.flags & static_cast<unsigned short>(~(EV_ADD | EV_ENABLE));
}

}  // namespace kqtest
