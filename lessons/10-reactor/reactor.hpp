// Lesson 10: a small reactor on kqueue, in the manner of ASIO's kqueue_reactor.
//
// Instead of asking "which sockets are ready?" and doing the work itself, a program tells the reactor what it
// wants done (read into this buffer, write these bytes, accept a connection, call me in 50 ms) and gives a handler
// for each; the reactor does it when the kernel says it can, and calls the handler with the result. The echo and
// chat servers of this lesson are written on it, in a few dozen lines each, without one kevent().
//
// The contract every handler can count on:
//   - it is called exactly once: with the result, with an error, or with kAborted when its operation was
//     cancelled (its descriptor closed, its timer cancelled), never silently dropped;
//   - it is called from run() or run_once(), after the call that started its operation has returned, never from
//     inside that call; so a buffer handed to an operation must stay alive, and unchanged, until then.
//
// One thread runs the reactor: every function must be called on it, except post() and stop(), which any thread
// may call. Writing to a connection the client has reset raises SIGPIPE: programs using the reactor ignore it.
#pragma once

#include <sys/event.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

namespace reactor {

// The error a handler gets when its operation was cancelled before it could complete.
inline constexpr int kAborted = ECANCELED;

struct Completion;  // something ready to be called back: the unit of the completion queue (reactor.cpp)
struct Operation;   // a Completion that first needs its descriptor to be ready (reactor.cpp)

class Reactor {
 public:
  using Clock = std::chrono::steady_clock;
  using TimerId = std::uint64_t;
  using Handler = std::function<void()>;
  using IoHandler = std::function<void(int error, std::size_t bytes)>;
  using AcceptHandler = std::function<void(int error, int fd)>;
  using TimerHandler = std::function<void(int error)>;

  // Creates the kqueue and registers the user event that post() and stop() trigger; stops the program if it can't.
  Reactor();
  // Closes every descriptor still open in the reactor, and the kqueue. Pending handlers are destroyed uncalled.
  ~Reactor();
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  // Hands `fd` (a socket, a pipe) to the reactor, which makes it non-blocking and owns it from now on: only
  // close() below closes it. Every operation on a descriptor needs it open in the reactor.
  void open(int fd);

  // Accepts a connection on the listening socket `listener`: the handler gets a new non-blocking descriptor (not yet
  // open in the reactor), or an error.
  void async_accept(int listener, AcceptHandler handler);

  // Reads some bytes into `buffer` (not empty): the handler gets how many (at least 1), or 0 at the end of the
  // stream, or an error. Reads on one descriptor complete in the order they were started.
  void async_read(int fd, std::span<char> buffer, IoHandler handler);

  // Writes all of `data`, in as many write() calls as it takes: the handler gets data.size(), or an error and how
  // many bytes went out before it. Writes on one descriptor go out in the order they were started, never
  // interleaved.
  void async_write(int fd, std::span<const char> data, IoHandler handler);

  // Cancels the descriptor's pending operations (their handlers get kAborted), forgets it and closes it. A closed
  // descriptor's number may come back from the kernel at once, and be opened again.
  void close(int fd);

  // Calls `handler` with 0 once `delay` has passed, or with kAborted if cancel() comes first.
  TimerId after(Clock::duration delay, TimerHandler handler);
  // Cancels a timer that has not fired yet; does nothing for one that has.
  void cancel(TimerId timer);

  // Calls `handler` from the reactor's thread, soon: the one way for another thread to hand the reactor work.
  // Handlers posted by one thread run in the order it posted them. Any thread.
  void post(Handler handler);

  // Makes run() return, once it has finished the handlers of its current round. Any thread.
  void stop();

  // Runs rounds (run_once) until stop().
  void run();

  // One round: waits until something happens (at most `max_wait`, if given; not at all when handlers are already
  // due), handles the batch of events the kernel returns, then calls the handlers that are due. Returns how many
  // it called.
  std::size_t run_once(std::optional<Clock::duration> max_wait = std::nullopt);

 private:
  enum Direction { kRead = 0, kWrite = 1 };
  struct Descriptor;  // a descriptor's state: its queues of operations waiting to read and to write (reactor.cpp)

  void start(int fd, Direction direction, std::unique_ptr<Operation> operation);
  void on_event(const struct kevent& event);
  void take_posted();
  const struct timespec* wait_limit(std::optional<Clock::duration> max_wait, struct timespec& storage);
  std::optional<Clock::time_point> next_deadline();
  void expire_timers();
  std::size_t run_completions();
  void wake();

  int kq_;
  std::unordered_map<int, std::unique_ptr<Descriptor>> descriptors_;
  std::deque<std::unique_ptr<Completion>> completed_;  // handlers due, called at the end of the round

  // Timers: handlers by id, and a min-heap of (deadline, id) whose entries for cancelled timers are skipped.
  TimerId next_timer_ = 1;
  std::unordered_map<TimerId, TimerHandler> timers_;
  using Deadline = std::pair<Clock::time_point, TimerId>;
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> deadlines_;

  // What other threads hand over: posted handlers, and the request to stop.
  std::mutex posted_mutex_;
  std::deque<Handler> posted_;  // guarded by posted_mutex_
  std::atomic<bool> stopping_ = false;
};

}  // namespace reactor
