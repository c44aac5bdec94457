// The open connections, by number: see registry.hpp.
#include "registry.hpp"

#include <utility>
#include <vector>

std::uint64_t Registry::add(std::shared_ptr<Connection> connection) {
  std::lock_guard lock(mutex_);
  const std::uint64_t id = next_id_++;
  open_.emplace(id, std::move(connection));
  return id;
}

std::shared_ptr<Connection> Registry::find(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  const auto found = open_.find(id);
  return found == open_.end() ? nullptr : found->second;  // a copy: one more reference, the caller's
}

void Registry::close(std::uint64_t id) {
  std::shared_ptr<Connection> closing;
  {
    std::lock_guard lock(mutex_);
    const auto found = open_.find(id);
    if (found == open_.end()) return;  // closed already, by another thread
    closing = std::move(found->second);
    open_.erase(found);
  }
  // Outside the lock: a system call. If another thread is serving the connection, it holds a reference: the
  // connection outlives this function, and ends when that thread lets go.
  closing->cancel();
}

void Registry::close_all() {
  std::unordered_map<std::uint64_t, std::shared_ptr<Connection>> closing;
  {
    std::lock_guard lock(mutex_);
    closing.swap(open_);
  }
  for (auto& [id, connection] : closing) connection->cancel();
}
