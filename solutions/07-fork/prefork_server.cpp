// Lesson 07: pre-forked workers and process supervision.
//
// The parent opens the listening socket, then forks kWorkers worker processes that share it. Each worker is a small
// event-driven server with a queue of its own. The parent serves no client: it supervises. It watches each worker's
// exit (EVFILT_PROC, NOTE_EXIT), reaps it and starts another; on SIGTERM or SIGINT it stops them all and exits 0
// once the last one is reaped. Read lessons/07-fork/README.md alongside: its numbered steps are the TODO(N) gaps of
// the exercise.
// The `// [snippet: NAME]` ... `// [end]` lines mark the code README.md quotes: leave them where they are.
//
// The protocol, one line per request, answered by whichever worker accepted the connection:
//   pid         ->  PID              the worker's process id
//   sleep MS    ->  PID sleeping     and the worker then blocks for MS milliseconds: its own clients wait, the
//                                    other workers' do not
#include <fcntl.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "kevent_format.hpp"
#include "setup.hpp"

constexpr std::size_t kWorkers = 4;
constexpr std::size_t kLongestLine = 4096;
// Replies owed to one client past which a worker reads no more of its requests until it reads (lesson 05,
// step 5): a client that sends and never reads is made to wait by TCP, and the worker's memory stays bounded.
constexpr std::size_t kMostOwed = 1 << 20;
constexpr std::int64_t kLongestSleepMs = 60'000;

// The supervisor's timers. A worker that dies within kShortLife of its start is replaced after kRestartDelayMs, not
// at once: a worker that crashes as it starts must not turn into thousands of forks a second.
constexpr std::uintptr_t kRestartTimer = 1;
constexpr std::uintptr_t kStopDeadline = 2;
constexpr std::uintptr_t kStopRepeat = 3;
constexpr std::int64_t kRestartDelayMs = 100;
constexpr std::int64_t kStopDeadlineMs = 10'000;  // then the workers still alive get SIGKILL
constexpr std::int64_t kStopRepeatMs = 100;       // SIGTERM again, until then, to the workers still alive
constexpr auto kShortLife = std::chrono::seconds(1);

static void* udata_of(std::uint64_t serial) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(serial)); }

// [snippet: change]
// Applies one change to the queue `kq` and stops the process with a message naming the change if the kernel
// refuses it. Returns the errno of a refusal listed in `tolerated` (0 for success), for the caller to handle.
static int change(int kq, std::uintptr_t ident, short filter, unsigned short flags, unsigned int fflags = 0,
                  std::int64_t data = 0, std::uint64_t serial = 0, int tolerated = 0) {
  struct kevent change;
  EV_SET(&change, ident, filter, flags | EV_RECEIPT, fflags, data, udata_of(serial));
  struct kevent receipt;
  if (kevent(kq, &change, 1, &receipt, 1, nullptr) == -1) kqlab::fail("kevent(" + kqlab::describe(change) + ")");
  const int error = (receipt.flags & EV_ERROR) ? static_cast<int>(receipt.data) : 0;
  if (error != 0 && error != tolerated) kqlab::fail("kevent(" + kqlab::describe(change) + ")", error);
  return error;
}
// [end]

// ----------------------------------------------------------------------------------------------------------------
// A worker: an event loop like lesson 01's, in a process of its own.

struct Client {
  std::uint64_t serial_ = 0;  // this connection's number, in the udata of its events (see client_for)
  std::string received_;      // bytes read that do not make a whole line yet
  std::string unsent_;        // replies not yet written
  bool writing_ = false;      // is EVFILT_WRITE registered for it? Exactly while unsent_ is not empty.
  bool reading_ = true;       // is EVFILT_READ enabled? Not while it is owed kMostOwed bytes or more.
};

class Worker {
 public:
  // Serves clients from the shared `listener`, with the queue `kq`, which must be this process's own.
  Worker(int kq, int listener);

  [[noreturn]] void run();

 private:
  void dispatch(const struct kevent& event);
  void accept_clients(const struct kevent& event);
  Client* client_for(const struct kevent& event);
  void on_readable(int fd, Client& client, const struct kevent& event);
  std::int64_t handle_request(Client& client, const std::string& line);
  void flush(int fd, Client& client);
  void close_client(int fd);

  const int kq_;
  const int listener_;
  int spare_;  // a descriptor kept open to be given up at the descriptor limit (lesson 05, step 4)
  const std::string pid_ = std::to_string(getpid());
  std::uint64_t next_serial_ = 1;
  std::unordered_map<int, Client> clients_;
};

Worker::Worker(int kq, int listener)
    : kq_(kq), listener_(listener), spare_(open("/dev/null", O_RDONLY | O_CLOEXEC)) {
  if (spare_ == -1) kqlab::fail("open /dev/null");
  change(kq_, listener_, EVFILT_READ, EV_ADD);
}

void Worker::run() {
  struct kevent events[64];
  for (;;) {
    const int ready = kevent(kq_, nullptr, 0, events, static_cast<int>(std::size(events)), nullptr);
    if (ready == -1) {
      if (errno == EINTR) continue;
      kqlab::fail("kevent");
    }
    for (int i = 0; i < ready; ++i) dispatch(events[i]);
  }
}

void Worker::dispatch(const struct kevent& event) {
  const int fd = static_cast<int>(event.ident);
  if (fd == listener_) {
    accept_clients(event);
  } else if (Client* client = client_for(event); client == nullptr) {
    // A stale event: its client was closed earlier in this batch.
  } else if (event.filter == EVFILT_READ) {
    on_readable(fd, *client, event);
  } else if (event.filter == EVFILT_WRITE) {
    flush(fd, *client);
  }
}

// [snippet: accept-clients]
// Every worker's queue reports the same new connection, and every worker wakes up (the "thundering herd"); the
// first accept() gets it and the others get EAGAIN. That is not an error: someone else is serving that client.
void Worker::accept_clients(const struct kevent& event) {
  for (std::int64_t waiting = event.data; waiting > 0; --waiting) {
    const int fd = accept(listener_, nullptr, nullptr);
    if (fd == -1 && (errno == EMFILE || errno == ENFILE)) {
      // Out of descriptors (lesson 05, step 4): give up the spare to take the connection and close it, or the
      // level-triggered listener reports it again at once, and the worker spins.
      close(spare_);
      if (const int refused = accept(listener_, nullptr, nullptr); refused != -1) close(refused);
      spare_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (spare_ == -1) kqlab::fail("open /dev/null");
      continue;
    }
    if (fd == -1) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED) std::perror("accept");
      return;
    }
    kqlab::set_nonblocking(fd);
    Client& client = clients_[fd];
    client.serial_ = next_serial_++;
    change(kq_, fd, EVFILT_READ, EV_ADD, 0, 0, client.serial_);
  }
}
// [end]

Client* Worker::client_for(const struct kevent& event) {
  const auto found = clients_.find(static_cast<int>(event.ident));
  if (found == clients_.end() || udata_of(found->second.serial_) != event.udata) return nullptr;
  return &found->second;
}

void Worker::on_readable(int fd, Client& client, const struct kevent& event) {
  char buffer[16 * 1024];
  const auto want = static_cast<std::size_t>(std::clamp<std::int64_t>(event.data, 1, sizeof buffer));
  const ssize_t got = read(fd, buffer, want);
  if (got == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (got <= 0) {
    close_client(fd);
    return;
  }
  client.received_.append(buffer, static_cast<std::size_t>(got));
  std::int64_t sleep_ms = 0;
  std::size_t start = 0;
  for (std::size_t end; (end = client.received_.find('\n', start)) != std::string::npos; start = end + 1) {
    sleep_ms += handle_request(client, client.received_.substr(start, end - start));
  }
  client.received_.erase(0, start);
  const bool endless = client.received_.size() > kLongestLine;
  flush(fd, client);  // the replies go out before any sleep; flush() may close the client: do not use it after
  if (endless) {
    close_client(fd);
  } else if (sleep_ms > 0) {
    // Deliberately blocking, the whole process: this worker's other clients wait. The other workers, other
    // processes, serve theirs meanwhile: a pre-forked server contains a blocking call to one worker.
    std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
  }
}

// The milliseconds in a request `sleep MS`, if `text` (what follows "sleep ") is a number from 1 to kLongestSleepMs.
static bool parse_sleep(const std::string& text, std::int64_t& ms) {
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, ms);
  return !text.empty() && error == std::errc() && stop == end && ms >= 1 && ms <= kLongestSleepMs;
}

// Appends the reply to `line` to client.unsent_; returns how long to sleep once it is sent.
std::int64_t Worker::handle_request(Client& client, const std::string& line) {
  std::int64_t ms = 0;
  if (line == "pid") {
    client.unsent_ += pid_ + "\n";
  } else if (line.rfind("sleep ", 0) == 0 && parse_sleep(line.substr(6), ms)) {
    client.unsent_ += pid_ + " sleeping\n";
    return ms;
  } else {
    client.unsent_ += "unknown request: say pid, or sleep MS (1 to 60000)\n";
  }
  return 0;
}

void Worker::flush(int fd, Client& client) {
  while (!client.unsent_.empty()) {
    const ssize_t sent = write(fd, client.unsent_.data(), client.unsent_.size());
    if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (sent == -1) {
      close_client(fd);
      return;
    }
    client.unsent_.erase(0, static_cast<std::size_t>(sent));
  }
  const bool pending = !client.unsent_.empty();
  if (pending != client.writing_) {
    change(kq_, fd, EVFILT_WRITE, pending ? EV_ADD : EV_DELETE, 0, 0, client.serial_);
    client.writing_ = pending;
  }
  // Back-pressure (lesson 05, step 5): no more requests from a client owed kMostOwed bytes, until it reads.
  const bool read = client.unsent_.size() < kMostOwed;
  if (read != client.reading_) {
    change(kq_, fd, EVFILT_READ, read ? EV_ENABLE : EV_DISABLE, 0, 0, client.serial_);
    client.reading_ = read;
  }
}

void Worker::close_client(int fd) {
  clients_.erase(fd);
  close(fd);
}

// ----------------------------------------------------------------------------------------------------------------
// The supervisor: the parent process.

class Supervisor {
 public:
  // Creates the supervisor's queue, watches SIGTERM and SIGINT, and starts the workers.
  explicit Supervisor(int listener);

  // Supervises until a SIGTERM or SIGINT has stopped every worker.
  void run();

 private:
  void fill();
  bool start_worker();
  [[noreturn]] void become_worker();
  void dispatch(const struct kevent& event);
  void on_worker_exit(const struct kevent& event);
  void replace(std::chrono::steady_clock::time_point started);
  void begin_stop();

  const int kq_;
  const int listener_;
  bool stopping_ = false;
  std::unordered_map<pid_t, std::chrono::steady_clock::time_point> workers_;  // running workers, and their start
};

Supervisor::Supervisor(int listener) : kq_(kqueue()), listener_(listener) {
  if (kq_ == -1) kqlab::fail("kqueue");
  // As in lesson 06: ignore, then watch. These dispositions are inherited by every child forked from now on.
  for (const int number : {SIGTERM, SIGINT}) {
    std::signal(number, SIG_IGN);
    change(kq_, static_cast<std::uintptr_t>(number), EVFILT_SIGNAL, EV_ADD);
  }
  fill();
}

// Starts workers until there are kWorkers. When one cannot start, tries again after kRestartDelayMs.
void Supervisor::fill() {
  while (workers_.size() < kWorkers) {
    if (!start_worker()) {
      change(kq_, kRestartTimer, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, kRestartDelayMs);
      return;
    }
  }
}

// Forks a worker and watches for its exit. Returns false if there is no new worker to watch.
bool Supervisor::start_worker() {
  const pid_t pid = fork();
  if (pid == -1) {
    std::perror("fork");  // EAGAIN: too many processes; fill() tries again later
    return false;
  }
  if (pid == 0) become_worker();  // the child; never returns
  // The parent. NOTE_EXIT: an event when that process ends. A child that is already dead (it can be, by now) is
  // reported at once by FreeBSD and refused with ESRCH by macOS: then reap it here, and let fill() try again.
  if (change(kq_, static_cast<std::uintptr_t>(pid), EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, 0, ESRCH) == ESRCH) {
    waitpid(pid, nullptr, 0);
    return false;
  }
  workers_[pid] = std::chrono::steady_clock::now();
  return true;
}

// The child's side of fork(): becomes a worker, and never returns. It runs in a copy of the parent: this
// Supervisor with its kq_, the listening socket, the signal dispositions. Not everything in the copy still works.
void Supervisor::become_worker() {
  // Dispositions are inherited: SIGTERM and SIGINT are still ignored here, and nothing in this process watches
  // them. The supervisor stops its workers with SIGTERM: let its default action end this process.
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  // The queue is not: kqueue(2), "The queue is not inherited by a child created with fork(2)". kq_ is a number that
  // names nothing here (kevent() on it fails with EBADF), so the worker makes its own queue and registers in it.
  const int kq = kqueue();
  if (kq == -1) kqlab::fail("kqueue");
  Worker(kq, listener_).run();
}

// [snippet: supervisor-loop]
void Supervisor::run() {
  struct kevent happened[16];
  while (!stopping_ || !workers_.empty()) {
    const int ready = kevent(kq_, nullptr, 0, happened, static_cast<int>(std::size(happened)), nullptr);
    if (ready == -1) {
      if (errno == EINTR) continue;
      kqlab::fail("kevent");
    }
    for (int i = 0; i < ready; ++i) dispatch(happened[i]);
  }
}
// [end]

// [snippet: supervisor-dispatch]
void Supervisor::dispatch(const struct kevent& event) {
  if (event.filter == EVFILT_PROC) {
    on_worker_exit(event);
  } else if (event.filter == EVFILT_SIGNAL) {
    begin_stop();
  } else if (event.filter == EVFILT_TIMER && event.ident == kRestartTimer) {
    if (!stopping_) fill();
  } else if (event.filter == EVFILT_TIMER && event.ident == kStopRepeat) {
    for (const auto& [pid, started] : workers_) kill(pid, SIGTERM);
  } else if (event.filter == EVFILT_TIMER && event.ident == kStopDeadline) {
    for (const auto& [pid, started] : workers_) {
      std::fprintf(stderr, "supervisor: worker %d ignored SIGTERM for %lld ms: SIGKILL\n", static_cast<int>(pid),
                   static_cast<long long>(kStopDeadlineMs));
      kill(pid, SIGKILL);
    }
  }
}
// [end]

// EVFILT_PROC with NOTE_EXIT: the worker event.ident has ended. Its knote is gone with this event (EV_ONESHOT).
void Supervisor::on_worker_exit(const struct kevent& event) {
  const auto pid = static_cast<pid_t>(event.ident);
  // kqueue only reports the exit; the dead process stays a zombie, holding its process table entry, until its
  // parent reaps it with waitpid(). waitpid() also tells how it ended, the same way on every system (event.data
  // holds it too on FreeBSD, but is 0 on macOS unless NOTE_EXITSTATUS is asked for). It returns at once, or as soon
  // as the worker has finished exiting.
  int status = 0;
  while (waitpid(pid, &status, 0) == -1 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) {
    std::fprintf(stderr, "supervisor: worker %d killed by signal %d\n", static_cast<int>(pid), WTERMSIG(status));
  } else {
    std::fprintf(stderr, "supervisor: worker %d exited with status %d\n", static_cast<int>(pid), WEXITSTATUS(status));
  }
  const auto found = workers_.find(pid);
  if (found == workers_.end()) return;
  const auto started = found->second;
  workers_.erase(found);
  if (!stopping_) replace(started);  // when stopping, run() ends once the last one is reaped
}

// Starts a worker in place of one that ran since `started`: at once, or after kRestartDelayMs if it died young.
void Supervisor::replace(std::chrono::steady_clock::time_point started) {
  if (std::chrono::steady_clock::now() - started < kShortLife) {
    change(kq_, kRestartTimer, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, kRestartDelayMs);
  } else {
    fill();
  }
}

// SIGTERM or SIGINT: stop every worker, and end once all are reaped.
void Supervisor::begin_stop() {
  if (stopping_) return;
  stopping_ = true;
  for (const auto& [pid, started] : workers_) kill(pid, SIGTERM);
  // A worker forked just before the stop may not have reset its dispositions yet: SIGTERM, still ignored there as
  // the supervisor ignores it, is then lost. So say it again every kStopRepeatMs (a periodic timer) to those still
  // alive; a worker that took the first one is gone and asked nothing more.
  change(kq_, kStopRepeat, EVFILT_TIMER, EV_ADD, 0, kStopRepeatMs);
  change(kq_, kStopDeadline, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, kStopDeadlineMs);
}

int main(int argc, char** argv) {
  const kqlab::Address address = kqlab::parse_arguments(
      argc, argv, "A pre-forked server: 4 worker processes share the listening socket, the parent supervises them.");
  // Ignored SIGPIPE is inherited by the workers, which write to clients that may be gone.
  std::signal(SIGPIPE, SIG_IGN);
  const int listener = kqlab::open_listener(address);
  Supervisor supervisor(listener);
  // Printed by the parent only, after the forks; flushed at once. A line left in stdout's buffer at fork() would be
  // copied into every child, and printed again by each.
  kqlab::announce_listening(listener);
  supervisor.run();
  return 0;
}
