// Lesson 11: many threads on one queue.
//
// A factoring server (factor.hpp): each line a client sends is a number, and the answer is its prime factors. The
// work is slow, so several worker threads share it: all of them wait in kevent() on one kqueue, and whichever the
// kernel wakes handles the event. Three rules make that safe, one per part of this file:
//   - EV_DISPATCH: a connection's event goes to one thread, and the kernel reports nothing more about it until
//     that thread re-enables it, when it is done (steps 1 and 2);
//   - events carry a connection's number, never its address: a thread that looks it up holds a reference, and a
//     connection closed by another thread meanwhile is not freed under it (step 3, registry.hpp);
//   - a user event, left triggered, stops every worker (step 4).
// Read lessons/11-threads/README.md alongside: its numbered steps are the TODO(N) gaps of the exercise.
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "connection.hpp"
#include "kevent_format.hpp"
#include "registry.hpp"
#include "setup.hpp"

namespace {

// Identifiers of the events that are not about a connection's descriptor, numbers of our choosing. A timer's
// identifier is otherwise its connection's number, which is never 0.
constexpr std::uintptr_t kStop = 1;         // EVFILT_USER: the workers are to stop
constexpr std::uintptr_t kRetryAccept = 0;  // EVFILT_TIMER: accept again after running out of descriptors
constexpr std::int64_t kRetryAcceptMs = 100;

// What every worker shares. Only the registry changes after the workers start, and it has its own lock.
struct Server {
  int kq = -1;
  int listener = -1;
  std::int64_t timeout_ms = 0;
  Registry registry;
};

// Applies `changes` in one kevent() call. EV_RECEIPT makes the kernel answer each change in an event of its own
// (EV_ERROR set, data 0 or an error number); any error stops the server with the change named, except
// `expected`, an error the caller knows can happen (and says why).
void apply(int kq, std::span<struct kevent> changes, int expected = 0) {
  struct kevent receipts[4];
  for (struct kevent& change : changes) change.flags |= EV_RECEIPT;
  const int got = kevent(kq, changes.data(), static_cast<int>(changes.size()), receipts,
                         static_cast<int>(changes.size()), nullptr);
  if (got == -1) kqlab::fail("kevent");
  for (int i = 0; i < got; ++i) {
    const int error = static_cast<int>(receipts[i].data);
    if ((receipts[i].flags & EV_ERROR) && error != 0 && error != expected) {
      kqlab::fail("kevent(" + kqlab::describe(receipts[i]) + ")", error);
    }
  }
}

// ---- Step 1: one connection, one thread at a time ----------------------------------------------------------------

// Registers a new connection: reading, writing (disabled until answers wait for room), and its timeout. Every
// registration of a connection is EV_DISPATCH: the thread that gets one of its events is the only one to hear of
// it until it re-enables the registration (rearm).
void watch_connection(Server& server, int fd, std::uint64_t id) {
  // Writing first, reading last: the moment reading is registered another thread may serve the connection and
  // enable writing, which must exist by then.
  struct kevent changes[3];
  EV_SET(&changes[0], fd, EVFILT_WRITE, EV_ADD | EV_DISPATCH | EV_DISABLE, 0, 0, udata_of(id));
  EV_SET(&changes[1], id, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, server.timeout_ms, udata_of(id));
  EV_SET(&changes[2], fd, EVFILT_READ, EV_ADD | EV_DISPATCH, 0, 0, udata_of(id));
  apply(server.kq, changes);
}

// Accepts every waiting client, then re-enables the listening socket (EV_DISPATCH too: one thread accepts, the
// others go on serving).
void accept_clients(Server& server) {
  for (;;) {
    const int fd = accept(server.listener, nullptr, nullptr);
    if (fd == -1) {
      if (errno == EINTR || errno == ECONNABORTED) continue;  // a client that left before it was accepted
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: the clients wait in the listen queue. Accepting again at once would fail again at
        // once, so try again a little later (lesson 05), leaving the listening socket disabled until then.
        std::perror("accept (trying again in 100 ms)");
        struct kevent retry;
        EV_SET(&retry, kRetryAccept, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, kRetryAcceptMs, nullptr);
        apply(server.kq, std::span(&retry, 1));
        return;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) kqlab::fail("accept");
      break;  // no one else waiting
    }
    kqlab::set_nonblocking(fd);
    const std::uint64_t id = server.registry.add(std::make_shared<Connection>(fd));
    watch_connection(server, fd, id);
  }
  struct kevent enable;
  EV_SET(&enable, server.listener, EVFILT_READ, EV_ENABLE, 0, 0, nullptr);
  apply(server.kq, std::span(&enable, 1));
}

// ---- Step 2: re-enable when done ---------------------------------------------------------------------------------

// The thread is done with the connection for now: restarts its timeout and re-enables the registration it waits
// on, in one call. Only now may another thread get its next event.
void rearm(Server& server, const Connection& connection, std::uint64_t id, Connection::Outcome outcome) {
  const short awaited = outcome == Connection::Outcome::kRoom ? EVFILT_WRITE : EVFILT_READ;
  struct kevent changes[2];
  EV_SET(&changes[0], id, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, server.timeout_ms, udata_of(id));
  // udata again: a change to a registration replaces its udata with the change's.
  EV_SET(&changes[1], connection.fd(), awaited, EV_ENABLE, 0, 0, udata_of(id));
  apply(server.kq, changes);
}

// ---- Step 3: closing while other threads may hold the connection ------------------------------------------------

// Closes a connection this thread is done with: the registry forgets it, and its timer goes. ENOENT is expected:
// the timer may have fired just now, its event on its way to another thread, which will find the number gone.
void close_connection(Server& server, std::uint64_t id) {
  server.registry.close(id);
  struct kevent change;
  EV_SET(&change, id, EVFILT_TIMER, EV_DELETE, 0, 0, nullptr);
  apply(server.kq, std::span(&change, 1), ENOENT);
}

// A connection's descriptor is readable or writable: serve it, then close or re-arm it.
void on_connection(Server& server, const struct kevent& event) {
  const std::uint64_t id = id_of(event);
  // [snippet: hold]
  // Held (a reference) until this function returns, even if another thread closes the connection meanwhile.
  const std::shared_ptr<Connection> connection = server.registry.find(id);
  if (connection == nullptr) return;  // stale: closed since the kernel queued this event
  // [end]
  const Connection::Outcome outcome = event.filter == EVFILT_READ ? connection->serve() : connection->flush();
  if (outcome == Connection::Outcome::kEnded) {
    close_connection(server, id);
  } else {
    rearm(server, *connection, id, outcome);
  }
}

// A timer: a connection's timeout (close it, whichever thread is serving it), or the accept retry.
void on_timer(Server& server, const struct kevent& event) {
  if (event.ident == kRetryAccept) {
    accept_clients(server);
    return;
  }
  server.registry.close(id_of(event));  // EV_ONESHOT: the timer is gone already
}

// ---- Step 4: the workers, and how they stop ----------------------------------------------------------------------

// [snippet: worker]
// One worker thread: takes one event at a time from the shared queue and handles it, until the stop event.
void work(Server& server) {
  for (;;) {
    struct kevent event;
    // One event per call: with EV_DISPATCH an event is a task this thread takes on. A batch of them would keep
    // the rest of the batch waiting behind the first, while the other threads have nothing to do.
    const int ready = kevent(server.kq, nullptr, 0, &event, 1, nullptr);
    if (ready == -1) {
      if (errno == EINTR) continue;
      kqlab::fail("kevent");
    }
    if (ready == 0) continue;
    if (event.filter == EVFILT_USER) return;  // stop: left triggered, so every worker sees it
    if (event.filter == EVFILT_TIMER) {
      on_timer(server, event);
    } else if (event.ident == static_cast<std::uintptr_t>(server.listener)) {
      accept_clients(server);
    } else {
      on_connection(server, event);
    }
  }
}
// [end]

// SIGTERM and SIGINT, as events of a queue of the main thread's own (lesson 06): ignored by the process, recorded
// by the queue.
int watch_stop_signals() {
  const int signals = kqueue();
  if (signals == -1) kqlab::fail("kqueue");
  struct kevent changes[2];
  int count = 0;
  for (const int number : {SIGTERM, SIGINT}) {
    std::signal(number, SIG_IGN);
    EV_SET(&changes[count++], number, EVFILT_SIGNAL, EV_ADD, 0, 0, nullptr);
  }
  apply(signals, changes);
  return signals;
}

void wait_for_stop_signal(int signals) {
  struct kevent event;
  while (kevent(signals, nullptr, 0, &event, 1, nullptr) != 1) {
    if (errno != EINTR) kqlab::fail("kevent");
  }
}

}  // namespace

int main(int argc, char** argv) {
  long long threads = 4;
  long long timeout_ms = 30'000;
  const kqlab::Address address = kqlab::parse_arguments(
      argc, argv, "A factoring server: worker threads share one kqueue. Send a number per line.",
      {{"--threads", "worker threads, all waiting on the one queue", 1, 64, &threads},
       {"--timeout-ms", "close a connection this long after the server last finished with it", 1, 86'400'000,
        &timeout_ms}});
  std::signal(SIGPIPE, SIG_IGN);
  const int signals = watch_stop_signals();

  Server server;
  server.timeout_ms = timeout_ms;
  server.listener = kqlab::open_listener(address);
  server.kq = kqueue();
  if (server.kq == -1) kqlab::fail("kqueue");
  struct kevent changes[2];
  EV_SET(&changes[0], server.listener, EVFILT_READ, EV_ADD | EV_DISPATCH, 0, 0, nullptr);
  // [snippet: stop-event]
  // No EV_CLEAR: once triggered, the stop event stays triggered, and every worker's next kevent() returns it.
  EV_SET(&changes[1], kStop, EVFILT_USER, EV_ADD, 0, 0, nullptr);
  // [end]
  apply(server.kq, changes);

  std::vector<std::thread> workers;
  for (long long i = 0; i < threads; ++i) workers.emplace_back(work, std::ref(server));
  kqlab::announce_listening(server.listener);

  wait_for_stop_signal(signals);
  struct kevent stop;
  EV_SET(&stop, kStop, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
  apply(server.kq, std::span(&stop, 1));
  for (std::thread& worker : workers) worker.join();

  server.registry.close_all();  // every connection's memory and descriptor go with the last reference
  close(server.kq);
  close(server.listener);
  close(signals);
  return 0;
}
