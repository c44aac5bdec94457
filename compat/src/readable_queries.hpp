// BSD's `data` for a socket's EVFILT_READ, asked for a whole epoll batch at once.
//
// FreeBSD's filter reads the byte count off the socket buffer for free; on Linux it takes a system call per
// event (FIONREAD), and on a machine with the usual side-channel mitigations the system call's entry and exit
// are most of its cost (about 210 of 330 ns here). When one epoll batch brings many readable sockets, the queue
// asks for all their counts in one io_uring submission instead (IORING_OP_URING_CMD with SOCKET_URING_OP_SIOCINQ,
// Linux 6.7): about 215 ns per socket instead of 345 at 64 per batch. Small batches keep FIONREAD, which is
// cheaper there: a submission costs more than one system call.
//
// Only an optimisation. The process has one ring, made with its first queue (so that the layer's descriptors do
// not grow while a program runs: tests of descriptor leaks count them) and kept until exit: closing a ring that
// was used makes the kernel interrupt the threads that used it once (io_uring's exit work adds task work with
// TWA_SIGNAL), and an interrupted epoll_wait fails with EINTR, which BSD's kevent() would never do without a
// signal. Queues share it under a lock they only try: a queue that finds it busy asks with FIONREAD. Where
// io_uring is missing, disabled (kernel.io_uring_disabled, seccomp) or too old for the command (every answer
// EOPNOTSUPP for a fresh TCP socket, tried once before the first batch), the process stops trying and every event
// keeps its FIONREAD. A socket the command does not serve (Unix domain sockets: their protocol has no ioctl
// there) answers EOPNOTSUPP and is asked with FIONREAD from then on. Either way the value is the same snapshot
// of the receive queue, taken within the same kevent() call, with none of the program's code run in between.
#pragma once

#include <linux/io_uring.h>

#include <cstdint>
#include <memory>

namespace kqcompat {

// Below this many sockets in one batch, FIONREAD per socket is cheaper than a submission.
constexpr int kWorthBatching = 8;

// Bytes readable on each of `fds` (at most ReadableQueries::kCapacity), through the process's ring. The answer
// for fds[i] goes to results[slots[i]] (slots below kCapacity; the caller's own numbering, an epoll batch's event
// index, so that it needs no second pass): >= 0, or -errno for that socket (-EOPNOTSUPP: a socket the command
// does not serve). Returns false when the ring could not be used this time (busy, missing, refused): then ask
// each with FIONREAD.
bool ask_readable_counts(const int* fds, const int* slots, int count, int* results);

// Makes the process's ring if it has none (kqueue() calls it). Nothing happens where io_uring is unavailable.
void readable_queries_open();

// pthread_atfork's child handler (fork_hooks.cpp): the child lets go of its copies of the parent's ring (its
// memory is shared with the parent, who goes on using it) and may make its own.
// What the close wrapper calls for every watched number: the program may close the ring's. Async-signal-safe.
void readable_queries_descriptor_closing(int fd);

void readable_queries_fork_prepare();
void readable_queries_fork_parent();
void readable_queries_fork_child();

class ReadableQueries {
 public:
  // At most this many per submission (epoll batches are 64 events).
  static constexpr int kCapacity = 64;

  // A ring, or null when io_uring cannot make one.
  static std::unique_ptr<ReadableQueries> open();
  ~ReadableQueries();
  // Unmaps and closes this process's copies only (a fork child's); the descriptor only when it is still the ring's.
  void release_copies(bool close_descriptor = true);
  int descriptor() const { return fd_; }
  // Whether this kernel has the command: asks it once, for a fresh TCP socket.
  bool serves_tcp();
  ReadableQueries(const ReadableQueries&) = delete;
  ReadableQueries& operator=(const ReadableQueries&) = delete;

  // Bytes readable on each of `fds` (at most kCapacity), into results[slots[i]]: >= 0, or -errno for that
  // socket (-EIO when no answer came). Returns false when the submission itself failed: the ring is then
  // unusable (the queue drops it and stops trying).
  bool ask(const int* fds, const int* slots, int count, int* results);

 private:
  ReadableQueries() = default;
  bool open_ring();

  int fd_ = -1;
  uint32_t batch_ = 0;  // in each entry's user_data, so that a late completion of an earlier batch is ignored
  void* rings_ = nullptr;  // the submission and completion rings (one mapping)
  size_t rings_size_ = 0;
  io_uring_sqe* sqes_ = nullptr;
  size_t sqes_size_ = 0;
  unsigned* sq_tail_ = nullptr;
  unsigned* sq_mask_ = nullptr;
  unsigned* sq_array_ = nullptr;
  unsigned* cq_head_ = nullptr;
  unsigned* cq_tail_ = nullptr;
  unsigned* cq_mask_ = nullptr;
  io_uring_cqe* cqes_ = nullptr;
};

}  // namespace kqcompat
