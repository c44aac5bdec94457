#include "readable_queries.hpp"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "fd_table.hpp"
#include "queue_lock.hpp"

namespace kqcompat {
namespace {

// Linux 6.7's socket command for SIOCINQ (include/uapi/linux/io_uring.h), which older headers lack.
constexpr unsigned kSocketUringOpSiocinq = 0;

int io_uring_setup(unsigned entries, io_uring_params* params) {
  return static_cast<int>(syscall(SYS_io_uring_setup, entries, params));
}

int io_uring_enter(int fd, unsigned submit, unsigned wait) {
  return static_cast<int>(syscall(SYS_io_uring_enter, fd, submit, wait, IORING_ENTER_GETEVENTS, nullptr, 0));
}

template <typename T>
T* at(void* base, unsigned offset) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

// The process's ring, and whether io_uring refused to serve. Never destroyed (see readable_queries.hpp).
QueueLock& ring_lock = *new QueueLock;  // queue_lock.hpp: tried once per batch
ReadableQueries* ring = nullptr;
bool refused = false;
bool probed = false;  // whether the kernel was asked if it has the command (serves_tcp)
// The ring's descriptor number until the program closes it (a daemon closing every descriptor, say): then the
// number may be reused, even for another ring, and submitting to it would be a disaster. Set to -1 by the close
// wrapper, lock-free.
std::atomic<int> ring_descriptor{-1};

}  // namespace

void readable_queries_open() {
  std::lock_guard guard(ring_lock);
  if (ring || refused) return;
  ring = ReadableQueries::open().release();
  refused = !ring;
  if (refused) return;
  fd_facts_create(ring->descriptor());  // so that the close wrapper tells us when the program closes it
  ring_descriptor.store(ring->descriptor());
}

bool ask_readable_counts(const int* fds, const int* slots, int count, int* results) {
  std::unique_lock lock(ring_lock, std::try_to_lock);
  if (!lock.owns_lock() || refused || !ring) return false;
  if (ring_descriptor.load() != ring->descriptor()) {
    refused = true;  // closed behind the layer's back: never touch that number again
    return false;
  }
  if (!probed) {
    probed = true;
    refused = !ring->serves_tcp();  // a kernel before 6.7: the ring stays open, unused
    if (refused) return false;
  }
  // A failed submission: FIONREAD from now on. The ring stays open, unused.
  if (!ring->ask(fds, slots, count, results)) {
    refused = true;
    return false;
  }
  return true;
}

void readable_queries_descriptor_closing(int fd) {
  int expected = fd;
  if (fd >= 0) ring_descriptor.compare_exchange_strong(expected, -1);
}

void readable_queries_fork_prepare() { ring_lock.lock(); }
void readable_queries_fork_parent() { ring_lock.unlock(); }

void readable_queries_fork_child() {
  // A ring whose number the program closed is not ours to close: the number may be another file's by now.
  const bool still_ours = ring && ring_descriptor.load() == ring->descriptor();
  ring_descriptor.store(-1);
  if (ring) ring->release_copies(still_ours);
  delete ring;
  ring = nullptr;
  refused = false;
  probed = false;
  ring_lock.unlock();
}

std::unique_ptr<ReadableQueries> ReadableQueries::open() {
  std::unique_ptr<ReadableQueries> made(new ReadableQueries());
  if (!made->open_ring()) return nullptr;
  return made;
}

bool ReadableQueries::open_ring() {
  io_uring_params params{};
  fd_ = io_uring_setup(kCapacity, &params);  // its descriptor is close-on-exec, as io_uring's always are
  if (fd_ < 0) return false;
  if (!(params.features & IORING_FEAT_SINGLE_MMAP) || params.sq_entries < kCapacity) return false;
  rings_size_ = std::max<size_t>(params.sq_off.array + params.sq_entries * sizeof(unsigned),
                                 params.cq_off.cqes + params.cq_entries * sizeof(io_uring_cqe));
  rings_ = mmap(nullptr, rings_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQ_RING);
  if (rings_ == MAP_FAILED) {
    rings_ = nullptr;
    return false;
  }
  sqes_size_ = params.sq_entries * sizeof(io_uring_sqe);
  void* sqes = mmap(nullptr, sqes_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQES);
  if (sqes == MAP_FAILED) return false;
  sqes_ = static_cast<io_uring_sqe*>(sqes);
  sq_tail_ = at<unsigned>(rings_, params.sq_off.tail);
  sq_mask_ = at<unsigned>(rings_, params.sq_off.ring_mask);
  sq_array_ = at<unsigned>(rings_, params.sq_off.array);
  cq_head_ = at<unsigned>(rings_, params.cq_off.head);
  cq_tail_ = at<unsigned>(rings_, params.cq_off.tail);
  cq_mask_ = at<unsigned>(rings_, params.cq_off.ring_mask);
  cqes_ = at<io_uring_cqe>(rings_, params.cq_off.cqes);
  // Every entry asks the same question of a different socket, and the kernel only reads the entries: write what
  // never changes once (each slot's entry, the command), so a batch writes only each socket's number and tag.
  for (unsigned slot = 0; slot < params.sq_entries; ++slot) {
    io_uring_sqe& entry = sqes_[slot];
    std::memset(&entry, 0, sizeof entry);
    entry.opcode = IORING_OP_URING_CMD;
    entry.cmd_op = kSocketUringOpSiocinq;
    sq_array_[slot] = slot;
  }
  return true;
}

// Whether this kernel has the command (6.7 and later): a fresh TCP socket has 0 bytes to read. Asked once, before
// the first batch, so that a socket the command does not serve (Unix domain) is told from a kernel that serves
// none.
bool ReadableQueries::serves_tcp() {
  const int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return false;
  int answer = -1;
  const int slot = 0;
  const bool asked = ask(&probe, &slot, 1, &answer);
  ::close(probe);
  return asked && answer == 0;
}

ReadableQueries::~ReadableQueries() { release_copies(); }

void ReadableQueries::release_copies(bool close_descriptor) {
  if (sqes_) munmap(sqes_, sqes_size_);
  if (rings_) munmap(rings_, rings_size_);
  if (fd_ >= 0 && close_descriptor) ::close(fd_);
  sqes_ = nullptr;
  rings_ = nullptr;
  fd_ = -1;
}

bool ReadableQueries::ask(const int* fds, const int* slots, int count, int* results) {
  count = std::min(count, kCapacity);
  const uint64_t batch = ++batch_;
  unsigned tail = *sq_tail_;  // only this thread (under the ring's lock) writes it
  const unsigned mask = *sq_mask_;
  for (int i = 0; i < count; ++i) {
    io_uring_sqe& entry = sqes_[tail & mask];  // the rest of it was written by open_ring
    entry.fd = fds[i];
    entry.user_data = (batch << 32) | static_cast<uint32_t>(slots[i]);
    results[slots[i]] = -EIO;  // until its completion says otherwise
    ++tail;
  }
  __atomic_store_n(sq_tail_, tail, __ATOMIC_RELEASE);
  int submitted;
  do {
    submitted = io_uring_enter(fd_, static_cast<unsigned>(count), static_cast<unsigned>(count));
  } while (submitted < 0 && errno == EINTR);
  // The completions that are there, whatever happened. Those that come later (a signal cut the wait short) carry
  // this batch's number and are skipped then; their sockets fall back to FIONREAD now.
  unsigned head = *cq_head_;
  const unsigned end = __atomic_load_n(cq_tail_, __ATOMIC_ACQUIRE);
  const unsigned cq_mask = *cq_mask_;
  for (; head != end; ++head) {
    const io_uring_cqe& done = cqes_[head & cq_mask];
    const auto slot = static_cast<uint32_t>(done.user_data);
    if (done.user_data >> 32 != batch || slot >= static_cast<uint32_t>(kCapacity)) continue;  // an earlier batch's
    results[slot] = done.res;
  }
  __atomic_store_n(cq_head_, head, __ATOMIC_RELEASE);
  return submitted == count;
}

}  // namespace kqcompat
