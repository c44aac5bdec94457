// The state of one proxied connection: a client, its upstream connection, and the bytes on their way between the
// two. Plain data: what is done with it is in proxy.cpp.
#pragma once

#include <cstdint>
#include <string>

struct Pair;

// One direction of a pair: bytes read from one side and not written to the other yet.
struct Direction {
  std::string buffer_;        // never more than --buffer bytes
  bool source_done_ = false;  // the source has finished sending (EOF read): nothing more will come
  bool shut_ = false;         // finished: every byte written, and the destination told (shutdown(SHUT_WR))
};

// One socket of a pair. Its filters carry the Endpoint's address in udata, so an event leads straight to it.
struct Endpoint {
  Pair* pair_;
  Direction* from_here_;     // what is read from this socket goes here,
  Direction* to_here_;       // and what is written to it comes from here
  int fd_ = -1;
  bool reading_ = false;     // is its EVFILT_READ enabled?
  bool writing_ = false;     // is its EVFILT_WRITE enabled?
  bool emptying_ = false;    // waiting for EVFILT_EMPTY: the peer has not acknowledged every byte yet (step 5)
};

// A client and its upstream connection. Never moved: its Endpoints point at its Directions, and udata at them.
struct Pair {
  explicit Pair(std::uint64_t id) : id_(id) {}
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;

  std::uint64_t id_;          // the ident of its EVFILT_TIMER (timer idents are ours to choose)
  Direction up_;              // client -> upstream
  Direction down_;            // upstream -> client
  Endpoint client_{this, &up_, &down_};
  Endpoint upstream_{this, &down_, &up_};
  bool connected_ = false;    // the upstream connection is established
  bool timer_armed_ = false;  // its timer is registered: the connect timeout, or the wait for EVFILT_EMPTY
  bool closed_ = false;       // closed; the object lives on until the end of the batch
};
