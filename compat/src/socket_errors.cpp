#include "socket_errors.hpp"

#include <cstdint>
#include <mutex>

#include "fd_table.hpp"

namespace kqcompat {

std::atomic<bool> socket_error_tables::any_kept{false};

namespace {

// Errors by descriptor number, as the close bookkeeping keeps its facts (fd_table.hpp): 1024 chunks of 1024
// numbers, a chunk made when a number in it first has an error kept. An errno fits in 16 bits.
using fd_tables::kChunkBits;
using fd_tables::kChunks;
using fd_tables::kChunkSize;
using Slot = std::atomic<uint16_t>;
std::atomic<Slot*> chunks[kChunks];
std::mutex chunks_lock;

Slot* find_slot(int fd) {
  if (!fd_tables::in_reach(fd)) return nullptr;
  Slot* chunk = chunks[fd >> kChunkBits].load(std::memory_order_acquire);
  return chunk ? &chunk[fd & (kChunkSize - 1)] : nullptr;
}

void keep_socket_error(int fd, unsigned int error) {
  if (!fd_tables::in_reach(fd) || error == 0 || error > UINT16_MAX) return;
  std::atomic<Slot*>& chunk = chunks[fd >> kChunkBits];
  if (!chunk.load(std::memory_order_acquire)) {
    std::lock_guard guard(chunks_lock);
    if (!chunk.load(std::memory_order_relaxed)) chunk.store(new Slot[kChunkSize](), std::memory_order_release);
  }
  chunk.load(std::memory_order_acquire)[fd & (kChunkSize - 1)].store(static_cast<uint16_t>(error));
  socket_error_tables::any_kept.store(true, std::memory_order_release);
}

}  // namespace

unsigned int socket_error_for_event(int fd) {
  int error = 0;
  socklen_t size = sizeof error;
  if (next_getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 && error > 0) {
    keep_socket_error(fd, static_cast<unsigned int>(error));  // a newer error replaces the kept one, as so_error
    return static_cast<unsigned int>(error);
  }
  return static_cast<unsigned int>(kept_socket_error(fd));
}

int kept_socket_error(int fd) {
  if (!socket_errors_kept()) return 0;
  const Slot* slot = find_slot(fd);
  return slot ? slot->load(std::memory_order_acquire) : 0;
}

int take_socket_error(int fd) {
  if (!socket_errors_kept()) return 0;
  Slot* slot = find_slot(fd);
  return slot ? slot->exchange(0, std::memory_order_acq_rel) : 0;
}

void forget_socket_error(int fd) { take_socket_error(fd); }

}  // namespace kqcompat
