// The proxy: its queue, its listening socket, and the pairs it relays. Read proxy.cpp alongside, top to bottom.
#pragma once

#include <sys/event.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "pair.hpp"
#include "upstream_address.hpp"

class Proxy {
 public:
  // Creates the queue and registers the listening socket and SIGTERM.
  Proxy(int listener, kqlab::UpstreamAddress upstream, std::size_t buffer_limit, std::int64_t connect_timeout_ms);

  // The event loop: waits for events and hands each to its handler, until SIGTERM.
  void run();

 private:
  int apply(const struct kevent& change);
  void must(const struct kevent& change);
  void dispatch(const struct kevent& event);
  void accept_clients(const struct kevent& event);
  void turn_away(int client);
  void start_pair(int client);
  void register_endpoint(Endpoint& end, bool read, bool write);
  void set_filter(Endpoint& end, short filter, bool on);
  void arm_timer(Pair& pair, std::int64_t milliseconds);
  void disarm_timer(Pair& pair);
  void on_connect_done(Pair& pair, const struct kevent& event);
  void on_timer(Pair& pair);
  void on_readable(Endpoint& end, const struct kevent& event);
  void advance(Pair& pair);
  bool flush(Direction& direction, Endpoint& to);
  void update_interest(Endpoint& end);
  void finish(Pair& pair);
  void on_empty(Endpoint& end);
  void refuse(Pair& pair, const std::string& why);
  void abort(Pair& pair);
  void close_pair(Pair& pair);

  int kq_;
  int listener_;
  int spare_;                      // a descriptor kept to be given up at the descriptor limit (lesson 05, step 4)
  kqlab::UpstreamAddress upstream_;
  std::size_t buffer_limit_;       // --buffer: the most a Direction holds
  std::int64_t connect_timeout_ms_;
  bool empty_filter_;              // may this kqueue have EVFILT_EMPTY? (FreeBSD does; macOS, Linux not)
  bool stopping_ = false;          // SIGTERM came
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, std::unique_ptr<Pair>> pairs_;  // the open ones, by id
  std::vector<std::unique_ptr<Pair>> closed_;  // closed during this batch, freed once it is handled
};
