// Lesson 10: the reactor. Read lessons/10-reactor/README.md alongside: its numbered steps are the TODO(N) gaps.
//
// The shape is ASIO's kqueue_reactor: a state per descriptor with a queue of operations for each direction; every
// descriptor registered once, for reading and writing, edge-triggered; an operation tried at once before it waits;
// a round that first handles the kernel's whole batch and only then calls the handlers; timers kept in user space,
// the earliest deciding how long kevent() may sleep; and a user event that other threads trigger to wake the loop.
#include "reactor.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "kevent_format.hpp"
#include "setup.hpp"

namespace reactor {

// Something ready to be called back: complete() calls its handler with the result, or with error_ if it is set.
struct Completion {
  virtual ~Completion() = default;
  virtual void complete() = 0;
  int error_ = 0;  // an errno, or kAborted
};

// An operation on a descriptor: a Completion that must first get its system call through.
struct Operation : Completion {
  // One non-blocking attempt. true: finished (done, or failed, as error_ says), ready to complete; false: it would
  // block, and waits for the kernel to report its descriptor ready.
  virtual bool perform(int fd) = 0;
};

// What the reactor knows about one open descriptor: the operations waiting for it, each direction in the order
// they were started. Its address is the udata of the descriptor's two registrations.
struct Reactor::Descriptor {
  int fd_ = -1;
  std::deque<std::unique_ptr<Operation>> operations_[2];  // [kRead]: reads and accepts; [kWrite]: writes
};

namespace {

// The user event post() and stop() trigger. EVFILT_USER idents are the program's own numbers.
constexpr std::uintptr_t kWakeUp = 1;

// How many events one kevent() call may return.
constexpr int kBatch = 128;

bool would_block(int error) { return error == EAGAIN || error == EWOULDBLOCK; }

// Applies `changes` at once, each with EV_RECEIPT, and stops the program, naming the change, if one fails.
void apply(int kq, std::span<struct kevent> changes) {
  for (struct kevent& change : changes) change.flags |= EV_RECEIPT;
  std::vector<struct kevent> receipts(changes.size());
  const int got = kevent(kq, changes.data(), static_cast<int>(changes.size()), receipts.data(),
                         static_cast<int>(receipts.size()), nullptr);
  if (got == -1) kqlab::fail("kevent");
  for (int i = 0; i < got; ++i) {
    if ((receipts[i].flags & EV_ERROR) && receipts[i].data != 0) {
      kqlab::fail("kevent(" + kqlab::describe(changes[i]) + ")", static_cast<int>(receipts[i].data));
    }
  }
}

class ReadOperation final : public Operation {
 public:
  ReadOperation(std::span<char> buffer, Reactor::IoHandler handler)
      : buffer_(buffer), handler_(std::move(handler)) {}

  bool perform(int fd) override {
    for (;;) {
      const ssize_t got = ::read(fd, buffer_.data(), buffer_.size());
      if (got >= 0) {
        bytes_ = static_cast<std::size_t>(got);  // 0: the end of the stream
        return true;
      }
      if (errno == EINTR) continue;
      if (would_block(errno)) return false;
      error_ = errno;
      return true;
    }
  }

  void complete() override { handler_(error_, error_ ? 0 : bytes_); }

 private:
  std::span<char> buffer_;
  Reactor::IoHandler handler_;
  std::size_t bytes_ = 0;
};

class WriteOperation final : public Operation {
 public:
  WriteOperation(std::span<const char> data, Reactor::IoHandler handler) : data_(data), handler_(std::move(handler)) {}

  // Writes what the socket takes, and stays first in its queue until all is written: the next write cannot start
  // before, so writes never interleave.
  bool perform(int fd) override {
    while (written_ < data_.size()) {
      const ssize_t sent = ::write(fd, data_.data() + written_, data_.size() - written_);
      if (sent >= 0) {
        written_ += static_cast<std::size_t>(sent);
      } else if (would_block(errno)) {
        return false;
      } else if (errno != EINTR) {
        error_ = errno;  // EPIPE, ECONNRESET: the peer went away
        return true;
      }
    }
    return true;
  }

  void complete() override { handler_(error_, written_); }

 private:
  std::span<const char> data_;
  Reactor::IoHandler handler_;
  std::size_t written_ = 0;
};

class AcceptOperation final : public Operation {
 public:
  explicit AcceptOperation(Reactor::AcceptHandler handler) : handler_(std::move(handler)) {}
  ~AcceptOperation() override {
    if (accepted_ != -1) ::close(accepted_);  // accepted, but the reactor went away before it was handed over
  }

  bool perform(int listener) override {
    for (;;) {
      const int fd = ::accept(listener, nullptr, nullptr);
      if (fd != -1) {
        kqlab::set_nonblocking(fd);  // BSD's accept() copies O_NONBLOCK from the listener, Linux's does not
        accepted_ = fd;
        return true;
      }
      if (errno == EINTR || errno == ECONNABORTED) continue;  // a client that gave up: try the next
      if (would_block(errno)) return false;
      error_ = errno;  // EMFILE...
      return true;
    }
  }

  void complete() override { handler_(error_, std::exchange(accepted_, -1)); }

 private:
  Reactor::AcceptHandler handler_;
  int accepted_ = -1;
};

class TimerCompletion final : public Completion {
 public:
  TimerCompletion(Reactor::TimerHandler handler, int error) : handler_(std::move(handler)) { error_ = error; }
  void complete() override { handler_(error_); }

 private:
  Reactor::TimerHandler handler_;
};

class PostedCompletion final : public Completion {
 public:
  explicit PostedCompletion(Reactor::Handler handler) : handler_(std::move(handler)) {}
  void complete() override { handler_(); }

 private:
  Reactor::Handler handler_;
};

}  // namespace

Reactor::Reactor() : kq_(kqueue()) {
  if (kq_ == -1) kqlab::fail("kqueue");
  // EV_CLEAR: each trigger is reported once, then the event is reset. Without it, the first trigger would stay on,
  // and every wait after it would return at once.
  struct kevent change;
  EV_SET(&change, kWakeUp, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, nullptr);
  apply(kq_, std::span(&change, 1));
}

Reactor::~Reactor() {
  for (const auto& entry : descriptors_) ::close(entry.first);
  ::close(kq_);
}

void Reactor::open(int fd) {
  kqlab::set_nonblocking(fd);
  const auto [found, added] = descriptors_.try_emplace(fd, std::make_unique<Descriptor>());
  if (!added) kqlab::fail("Reactor::open(" + std::to_string(fd) + ")", EEXIST);
  Descriptor* descriptor = found->second.get();
  descriptor->fd_ = fd;
  // Registered once, for both directions, for as long as it is open: no kevent() per operation. EV_CLEAR, so that a
  // direction nobody waits on (writing, most of the time) is reported when something new happens to it (for writing:
  // room freed by the peer's acknowledgements), not on every wait.
  struct kevent changes[2];
  EV_SET(&changes[0], fd, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, descriptor);
  EV_SET(&changes[1], fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, descriptor);
  apply(kq_, changes);
}

void Reactor::async_accept(int listener, AcceptHandler handler) {
  start(listener, kRead, std::make_unique<AcceptOperation>(std::move(handler)));
}

void Reactor::async_read(int fd, std::span<char> buffer, IoHandler handler) {
  start(fd, kRead, std::make_unique<ReadOperation>(buffer, std::move(handler)));
}

void Reactor::async_write(int fd, std::span<const char> data, IoHandler handler) {
  start(fd, kWrite, std::make_unique<WriteOperation>(data, std::move(handler)));
}

// Starts an operation: finished at once if it can be, queued to wait for the descriptor otherwise. Either way its
// handler runs later, from the loop.
void Reactor::start(int fd, Direction direction, std::unique_ptr<Operation> operation) {
  const auto found = descriptors_.find(fd);
  if (found == descriptors_.end()) {
    operation->error_ = EBADF;  // not open in the reactor
    completed_.push_back(std::move(operation));
    return;
  }
  // Try first: the registration is EV_CLEAR, and the report of what is there now (bytes that arrived before this
  // read was started) may have come and gone while nobody waited. Waiting for the next report could wait forever.
  // But only when nothing waits before it: operations of one direction finish in the order they were started.
  auto& queue = found->second->operations_[direction];
  if (queue.empty() && operation->perform(fd)) {
    completed_.push_back(std::move(operation));  // its handler runs later, from the loop, never from in here
  } else {
    queue.push_back(std::move(operation));
  }
}

// One event of the batch. Only system calls happen here: no handler runs until the whole batch is handled.
void Reactor::on_event(const struct kevent& event) {
  if (event.filter == EVFILT_USER) {
    take_posted();
    return;
  }
  // No change goes in with the wait, so no entry is an EV_ERROR. udata is the descriptor's state, and still valid:
  // only a handler can close a descriptor, and none has run since the kernel returned this batch.
  auto* descriptor = static_cast<Descriptor*>(event.udata);
  auto& queue = descriptor->operations_[event.filter == EVFILT_WRITE ? kWrite : kRead];
  // EV_CLEAR: this report will not come again until something new happens. Finish every operation it allows, in
  // order, until one would block. (With EV_EOF, a read returns 0 and a write fails: they finish too.)
  while (!queue.empty() && queue.front()->perform(descriptor->fd_)) {
    completed_.push_back(std::move(queue.front()));
    queue.pop_front();
  }
}

void Reactor::close(int fd) {
  const auto found = descriptors_.find(fd);
  if (found == descriptors_.end()) return;
  // Every handler is called, once: the operations still waiting finish now, aborted. Their handlers run from the
  // loop, after close() returns, like every handler: never half-way through the caller's own work.
  for (auto& queue : found->second->operations_) {
    for (auto& operation : queue) {
      operation->error_ = kAborted;
      completed_.push_back(std::move(operation));
    }
  }
  descriptors_.erase(found);
  // close() also removes both registrations (kqueue(2)), so no later batch names the Descriptor just freed.
  ::close(fd);
}

Reactor::TimerId Reactor::after(Clock::duration delay, TimerHandler handler) {
  const TimerId timer = next_timer_++;
  timers_.emplace(timer, std::move(handler));
  deadlines_.emplace(Clock::now() + delay, timer);
  return timer;
}

void Reactor::cancel(TimerId timer) {
  const auto found = timers_.find(timer);
  if (found == timers_.end()) return;  // fired, or cancelled, already
  completed_.push_back(std::make_unique<TimerCompletion>(std::move(found->second), kAborted));
  timers_.erase(found);  // its deadline stays in the heap until it reaches the top, where next_deadline() drops it
}

// The earliest deadline of a timer still pending, if any.
std::optional<Reactor::Clock::time_point> Reactor::next_deadline() {
  while (!deadlines_.empty() && !timers_.contains(deadlines_.top().second)) deadlines_.pop();
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.top().first;
}

// The timers that are due join the completion queue, earliest first.
void Reactor::expire_timers() {
  const Clock::time_point now = Clock::now();
  for (auto deadline = next_deadline(); deadline && *deadline <= now; deadline = next_deadline()) {
    const auto found = timers_.find(deadlines_.top().second);
    deadlines_.pop();
    completed_.push_back(std::make_unique<TimerCompletion>(std::move(found->second), 0));
    timers_.erase(found);
  }
}

// The timeout of the next kevent(): until the earliest timer is due (0 if one is due already), but no longer than
// `max_wait`; nullptr, wait as long as it takes, when there is neither. `storage` holds the timespec returned.
const struct timespec* Reactor::wait_limit(std::optional<Clock::duration> max_wait, struct timespec& storage) {
  std::optional<Clock::duration> limit = max_wait;
  if (const auto deadline = next_deadline()) {
    const Clock::duration until = *deadline - Clock::now();
    if (!limit || until < *limit) limit = until;
  }
  if (!limit) return nullptr;
  // Rounded up: a timeout rounded down would wake the loop just before the timer is due, for another round.
  const auto nanoseconds = std::chrono::ceil<std::chrono::nanoseconds>(std::max(*limit, Clock::duration::zero()));
  storage.tv_sec = static_cast<time_t>(nanoseconds.count() / 1'000'000'000);
  storage.tv_nsec = static_cast<long>(nanoseconds.count() % 1'000'000'000);
  return &storage;
}

void Reactor::post(Handler handler) {
  bool was_empty = false;
  {
    std::lock_guard lock(posted_mutex_);
    was_empty = posted_.empty();
    posted_.push_back(std::move(handler));
  }
  // The loop may be asleep in kevent(): the user event wakes it. One trigger per batch of posts is enough: the
  // thread that made posted_ non-empty triggers, after adding; the loop, woken, takes everything in posted_.
  if (was_empty) wake();
}

void Reactor::wake() {
  struct kevent trigger;
  EV_SET(&trigger, kWakeUp, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
  apply(kq_, std::span(&trigger, 1));
}

// The user event was triggered: the posted handlers join the completion queue.
void Reactor::take_posted() {
  std::deque<Handler> posted;
  {
    std::lock_guard lock(posted_mutex_);
    posted.swap(posted_);
  }
  for (Handler& handler : posted) completed_.push_back(std::make_unique<PostedCompletion>(std::move(handler)));
}

void Reactor::stop() {
  stopping_ = true;
  wake();
}

void Reactor::run() {
  while (!stopping_) run_once();
  stopping_ = false;
}

std::size_t Reactor::run_once(std::optional<Clock::duration> max_wait) {
  // Handlers already due (an operation that finished at once, a cancellation): look at the kernel, but do not wait.
  struct timespec storage {};
  const struct timespec* timeout = completed_.empty() ? wait_limit(max_wait, storage) : &storage;
  struct kevent events[kBatch];
  const int ready = kevent(kq_, nullptr, 0, events, kBatch, timeout);
  if (ready == -1 && errno != EINTR) kqlab::fail("kevent");
  // First the whole batch: operations make their system calls, and those that finish join the completion queue. No
  // handler runs yet, so none can close a descriptor whose event is further down the batch: every udata stays valid.
  for (int i = 0; i < ready; ++i) on_event(events[i]);
  expire_timers();
  // Then the handlers.
  return run_completions();
}

// Calls the handlers due now, in order. Only those: what they start and finishes at once waits for the next round,
// after a look at the kernel, so that a busy connection cannot keep the others waiting.
std::size_t Reactor::run_completions() {
  std::deque<std::unique_ptr<Completion>> due;
  due.swap(completed_);
  for (const auto& completion : due) completion->complete();
  return due.size();
}

}  // namespace reactor
