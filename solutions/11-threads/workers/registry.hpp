// The open connections of the workers server, by number.
//
// Several threads handle events, so a connection can be closed by one thread while another holds an event for
// it, or is in the middle of serving it. An event therefore never carries a pointer to its connection: it carries
// the connection's number (in udata), which is never used twice. A thread looks the number up here and gets a
// reference (a shared_ptr) that keeps the connection alive for as long as it works on it; a number that is no
// longer here belonged to a connection closed meanwhile, and its event is stale.
#pragma once

#include <sys/event.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "connection.hpp"

// The number an event carries in udata (0: none, for the listening socket and the accept timer), both ways.
inline std::uint64_t id_of(const struct kevent& event) { return reinterpret_cast<std::uintptr_t>(event.udata); }
inline void* udata_of(std::uint64_t id) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(id)); }

class Registry {
 public:
  // Adds a connection; returns its number (never 0, never reused).
  std::uint64_t add(std::shared_ptr<Connection> connection);

  // The connection numbered `id`, held for the caller; nullptr if it was closed meanwhile.
  std::shared_ptr<Connection> find(std::uint64_t id);

  // Closes the connection numbered `id`, from any thread, if it is still open: forgets it and cancels it. Its
  // memory and its descriptor go when the last thread holding it lets go.
  void close(std::uint64_t id);

  // Closes every connection (the server is stopping).
  void close_all();

 private:
  std::mutex mutex_;
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, std::shared_ptr<Connection>> open_;
};
