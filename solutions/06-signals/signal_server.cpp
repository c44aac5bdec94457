// Lesson 06: signals and user events.
//
// One queue, four kinds of event. Besides its clients, the server hears SIGTERM and SIGINT (stop, but finish every
// reply already promised), SIGHUP (read the greeting again from the configuration file) and its worker thread
// (a slow job is done). None of them interrupts anything: each is one more event, handled by the loop between two
// others. Read lessons/06-signals/README.md alongside: its numbered steps are the TODO(N) gaps of the exercise.
// The `// [snippet: NAME]` ... `// [end]` lines mark the code README.md quotes: leave them where they are.
//
// The protocol, one line per request:
//   echo TEXT   ->  TEXT                      at once
//   square N    ->  square N = N*N            after a slow job on the worker thread
//   stats       ->  reloads K                 how many SIGHUPs the server has received
// and a greeting line, the configuration file's first line, to each new client.
#include <fcntl.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kevent_format.hpp"
#include "setup.hpp"

// The identifiers of the events that are not about a descriptor. EVFILT_USER and EVFILT_TIMER identifiers are
// numbers of our choosing, private to this queue; a signal's identifier is its number.
constexpr std::uintptr_t kResultsReady = 1;    // EVFILT_USER: the worker has finished jobs
constexpr std::uintptr_t kStopDeadline = 1;    // EVFILT_TIMER: the graceful stop has taken too long
constexpr std::int64_t kStopDeadlineMs = 10'000;
constexpr std::size_t kLongestLine = 4096;
// Replies owed to one client past which the server reads no more of its requests until it reads (lesson 05,
// step 5): a client that sends and never reads is made to wait by TCP, and the server's memory stays bounded.
constexpr std::size_t kMostOwed = 1 << 20;

// What the server remembers about one connection between its events.
struct Client {
  std::uint64_t serial_ = 0;  // this connection's number, in the udata of its events (see client_for)
  std::string received_;      // bytes read that do not make a whole line yet
  std::string unsent_;        // replies not yet written
  bool writing_ = false;      // is EVFILT_WRITE registered for it? Exactly while unsent_ is not empty.
  bool reading_ = true;       // is EVFILT_READ enabled? Not while it is owed kMostOwed bytes or more.
  int jobs_ = 0;              // squares handed to the worker whose results have not come back yet
};

// A slow job: who asked (the descriptor and serial number of the client, as in udata), the number, the result.
struct Job {
  int fd_ = -1;
  std::uint64_t serial_ = 0;
  std::int64_t number_ = 0;
  std::int64_t result_ = 0;
};

static void* udata_of(std::uint64_t serial) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(serial)); }

// The slow part of a request, standing in for any call that blocks: a database query, getaddrinfo() (which has no
// non-blocking form: ASIO's resolver runs it on a thread for this very reason), a big file compressed. 40 ms each:
// fifty of them done in the event loop would freeze every client for two seconds.
static std::int64_t slow_square(std::int64_t number) {
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  return number * number;
}

// The worker thread, and the two queues between it and the event loop. The loop hands jobs over with submit(); the
// thread does them one at a time, puts each result on the done queue and wakes the loop through the kqueue
// (EVFILT_USER, kResultsReady). The loop takes the results with take_done().
class Worker {
 public:
  // Starts the thread. `kq` must have the kResultsReady event registered before the first job is submitted.
  explicit Worker(int kq) : kq_(kq), thread_([this] { run(); }) {}
  ~Worker() { stop(); }

  // Queues a job for the thread. Called by the loop; never blocks for longer than the lock is held.
  void submit(const Job& job);

  // Every result the thread has finished since the last call, oldest first. Called by the loop.
  std::deque<Job> take_done();

  // Lets the job under way finish, drops the others, and waits for the thread to end. Called by the loop.
  void stop();

 private:
  void run();
  void post(const Job& job);

  const int kq_;
  std::mutex mutex_;  // guards the three members below it
  std::deque<Job> todo_;
  std::deque<Job> done_;
  bool stopping_ = false;
  std::condition_variable work_arrived_;
  std::thread thread_;  // last: the thread starts once everything it uses is built
};

void Worker::submit(const Job& job) {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    todo_.push_back(job);
  }
  work_arrived_.notify_one();
}

std::deque<Job> Worker::take_done() {
  const std::lock_guard<std::mutex> lock(mutex_);
  return std::exchange(done_, {});
}

void Worker::stop() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_arrived_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Worker::run() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_arrived_.wait(lock, [this] { return stopping_ || !todo_.empty(); });
      if (stopping_) return;
      job = todo_.front();
      todo_.pop_front();
    }
    job.result_ = slow_square(job.number_);  // without the lock: the loop goes on meanwhile
    post(job);
  }
}

// Runs on the worker thread: hands a finished job to the loop, and wakes the loop up.
void Worker::post(const Job& job) {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    done_.push_back(job);
  }
  // NOTE_TRIGGER fires the user event; the loop, asleep in kevent() in the other thread, wakes up. kevent() may be
  // called on one queue from several threads at once (kqueue(2)). With no room for an error entry, a change that
  // fails makes kevent() itself return -1. Triggers made before the loop gets to the event merge into one event
  // (EV_CLEAR, at registration): the loop must take every result there is, not one per event (step 5).
  struct kevent trigger;
  EV_SET(&trigger, kResultsReady, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
  if (kevent(kq_, &trigger, 1, nullptr, 0, nullptr) == -1) kqlab::fail("kevent(" + kqlab::describe(trigger) + ")");
}

// The number in a request `square N`, if `text` (what follows "square ") is one whose square fits in 64 bits.
static bool parse_square(const std::string& text, std::int64_t& number) {
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, number);
  return !text.empty() && error == std::errc() && stop == end && number >= -3'000'000'000 && number <= 3'000'000'000;
}

// Reads the greeting, the first line of the configuration file, into `greeting`; false if it cannot.
static bool read_greeting(const std::string& path, std::string& greeting) {
  std::FILE* file = std::fopen(path.c_str(), "r");
  if (file == nullptr) return false;
  char line[kLongestLine];
  const bool read = std::fgets(line, sizeof line, file) != nullptr;
  std::fclose(file);
  if (!read) return false;
  greeting.assign(line, std::strcspn(line, "\r\n"));
  return true;
}

class SignalServer {
 public:
  // Creates the queue and registers the listening socket, the signals and the worker's wake-up with it.
  SignalServer(int listener, std::string config_path, std::string greeting);

  // The event loop: runs until a SIGTERM or SIGINT has been handled and every reply promised by then is sent.
  void run();

 private:
  void watch(std::uintptr_t ident, short filter, unsigned short flags, std::uint64_t serial = 0,
             std::int64_t data = 0);
  void watch_signals();
  void dispatch(const struct kevent& event);
  void on_signal(const struct kevent& event);
  void reload();
  void begin_stop();
  void deliver_results();
  void accept_clients(const struct kevent& event);
  Client* client_for(const struct kevent& event);
  void on_readable(int fd, Client& client, const struct kevent& event);
  void handle_request(int fd, Client& client, const std::string& line);
  void flush(int fd, Client& client);
  void pace_reading(int fd, Client& client);
  void close_client(int fd);

  int kq_;
  int listener_;
  int spare_;  // a descriptor kept open to be given up at the descriptor limit (lesson 05, step 4)
  const std::string config_path_;
  std::string greeting_;
  std::int64_t reloads_ = 0;  // SIGHUPs received
  bool stopping_ = false;     // a SIGTERM or SIGINT came: finish what is promised, take nothing new
  std::uint64_t next_serial_ = 1;
  std::unordered_map<int, Client> clients_;
  Worker worker_;  // last: its thread starts once the queue is ready, and is stopped before anything else goes
};

SignalServer::SignalServer(int listener, std::string config_path, std::string greeting)
    : kq_(kqueue()), listener_(listener), spare_(open("/dev/null", O_RDONLY | O_CLOEXEC)), config_path_(std::move(config_path)), greeting_(std::move(greeting)),
      worker_(kq_) {
  if (kq_ == -1) kqlab::fail("kqueue");
  if (spare_ == -1) kqlab::fail("open /dev/null");
  watch(listener_, EVFILT_READ, EV_ADD);
  watch_signals();
  // The worker's wake-up: a user event, which only a kevent() change fires (NOTE_TRIGGER, in Worker::post).
  // EV_CLEAR: without it, a triggered user event stays triggered, and every wait would return it at once.
  watch(kResultsReady, EVFILT_USER, EV_ADD | EV_CLEAR);
}

// Applies one change to the queue (`flags` for `filter` on `ident`, `serial` as udata, `data` for a timer's period)
// and stops the server with a message naming the change if the kernel refuses it.
void SignalServer::watch(std::uintptr_t ident, short filter, unsigned short flags, std::uint64_t serial,
                         std::int64_t data) {
  struct kevent change;
  EV_SET(&change, ident, filter, flags | EV_RECEIPT, 0, data, udata_of(serial));
  struct kevent receipt;
  if (kevent(kq_, &change, 1, &receipt, 1, nullptr) == -1) kqlab::fail("kevent");
  if ((receipt.flags & EV_ERROR) && receipt.data != 0) {
    kqlab::fail("kevent(" + kqlab::describe(change) + ")", static_cast<int>(receipt.data));
  }
}

// SIGTERM and SIGINT (stop) and SIGHUP (reload) become events of the queue, and nothing else: the kernel's own
// action for them (ending the process) must not happen.
void SignalServer::watch_signals() {
  // EVFILT_SIGNAL only watches: the kernel still delivers the signal as if nobody watched, and the default action
  // of all three is to end the process. Ignoring them first (the BSD idiom) leaves the queue as the only one to
  // hear them: kqueue(2) records a signal "even if the signal has been marked as SIG_IGN". A handler instead would
  // interrupt the program anywhere, and could do almost nothing safely there (see the README).
  for (const int number : {SIGTERM, SIGINT, SIGHUP}) {
    std::signal(number, SIG_IGN);
    watch(static_cast<std::uintptr_t>(number), EVFILT_SIGNAL, EV_ADD);  // EV_CLEAR is implied for signals
  }
}

// [snippet: event-loop]
// Waits for events and hands each to its handler, until stopped and done.
void SignalServer::run() {
  struct kevent events[64];
  while (!stopping_ || !clients_.empty()) {
    const int ready = kevent(kq_, nullptr, 0, events, static_cast<int>(std::size(events)), nullptr);
    if (ready == -1) {
      if (errno == EINTR) continue;  // a signal with a handler of its own interrupted the wait: wait again
      kqlab::fail("kevent");
    }
    for (int i = 0; i < ready; ++i) dispatch(events[i]);
  }
  worker_.stop();
}
// [end]

// [snippet: dispatch]
// Events about a descriptor are told apart by descriptor; the others by filter. The user event is never looked up
// by its udata: a trigger is a change, and a change replaces udata (here with nullptr).
void SignalServer::dispatch(const struct kevent& event) {
  if (event.filter == EVFILT_SIGNAL) {
    on_signal(event);
  } else if (event.filter == EVFILT_USER) {
    deliver_results();
  } else if (event.filter == EVFILT_TIMER && event.ident == kStopDeadline) {
    std::fprintf(stderr, "stopping: %zu clients still waiting after %lld ms, closing them\n", clients_.size(),
                 static_cast<long long>(kStopDeadlineMs));
    std::vector<int> fds;
    for (const auto& [fd, client] : clients_) fds.push_back(fd);
    for (const int fd : fds) close_client(fd);
  } else if (static_cast<int>(event.ident) == listener_) {
    accept_clients(event);
  } else if (Client* client = client_for(event); client == nullptr) {
    // A stale event: its client was closed earlier in this batch.
  } else if (event.filter == EVFILT_READ) {
    on_readable(static_cast<int>(event.ident), *client, event);
  } else if (event.filter == EVFILT_WRITE) {
    flush(static_cast<int>(event.ident), *client);
  }
}
// [end]

// EVFILT_SIGNAL: event.ident is the signal, event.data how many times it came since the last event about it.
void SignalServer::on_signal(const struct kevent& event) {
  const int number = static_cast<int>(event.ident);
  if (number == SIGHUP) {
    // Two SIGHUPs close together can come as one event with data 2: count them all, reload once.
    reloads_ += event.data;
    reload();
  } else {
    begin_stop();  // SIGTERM or SIGINT
  }
}

// [snippet: reload]
// Reads the greeting again. Clients already connected keep the one they got; new ones get the new one.
void SignalServer::reload() {
  if (config_path_.empty()) {
    std::fprintf(stderr, "SIGHUP: no --config file to read again\n");
  } else if (read_greeting(config_path_, greeting_)) {
    std::fprintf(stderr, "SIGHUP: read %s again; the greeting is now \"%s\"\n", config_path_.c_str(),
                 greeting_.c_str());
  } else {
    std::fprintf(stderr, "SIGHUP: cannot read a line from %s; keeping the greeting\n", config_path_.c_str());
  }
}
// [end]

// A graceful stop: no new clients, no new requests, and every reply already promised is sent.
void SignalServer::begin_stop() {
  if (stopping_) return;  // a second SIGTERM while stopping: already on it
  stopping_ = true;
  // close() also removes the listener's registration: no more accept events. Connections not accepted yet are
  // refused (reset) by the kernel.
  close(listener_);
  listener_ = -1;
  // Whatever happens, stop within a bound: a client that never reads its replies must not hold us forever.
  watch(kStopDeadline, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, kStopDeadlineMs);
  std::vector<int> fds;
  for (const auto& [fd, client] : clients_) fds.push_back(fd);
  for (const int fd : fds) {
    Client& client = clients_.at(fd);
    if (client.jobs_ == 0 && client.unsent_.empty()) {
      close_client(fd);  // nothing promised: goodbye
    } else {
      watch(fd, EVFILT_READ, EV_DELETE, client.serial_);  // hear no new requests; flush() closes when done
    }
  }
}

// EVFILT_USER: the worker has finished one job or more. Delivers every result to its client, if still there.
void SignalServer::deliver_results() {
  for (const Job& job : worker_.take_done()) {
    const auto found = clients_.find(job.fd_);
    if (found == clients_.end() || found->second.serial_ != job.serial_) continue;  // that client has left
    Client& client = found->second;
    --client.jobs_;
    client.unsent_ += "square " + std::to_string(job.number_) + " = " + std::to_string(job.result_) + "\n";
    flush(job.fd_, client);
  }
}

void SignalServer::accept_clients(const struct kevent& event) {
  for (std::int64_t waiting = event.data; waiting > 0; --waiting) {
    const int fd = accept(listener_, nullptr, nullptr);
    if (fd == -1 && (errno == EMFILE || errno == ENFILE)) {
      // Out of descriptors (lesson 05, step 4): the connection stays queued and the level-triggered listener
      // reports it again at once. Give up the spare, accept the connection on it, close it, take the spare back.
      close(spare_);
      if (const int refused = accept(listener_, nullptr, nullptr); refused != -1) close(refused);
      spare_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (spare_ == -1) kqlab::fail("open /dev/null");
      continue;
    }
    if (fd == -1) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED) std::perror("accept");
      return;
    }
    kqlab::set_nonblocking(fd);
    Client& client = clients_[fd];
    client.serial_ = next_serial_++;
    watch(fd, EVFILT_READ, EV_ADD, client.serial_);
    client.unsent_ = greeting_ + "\n";
    flush(fd, client);
  }
}

Client* SignalServer::client_for(const struct kevent& event) {
  const auto found = clients_.find(static_cast<int>(event.ident));
  if (found == clients_.end() || udata_of(found->second.serial_) != event.udata) return nullptr;
  return &found->second;
}

// Reads what arrived and handles each whole line as a request.
void SignalServer::on_readable(int fd, Client& client, const struct kevent& event) {
  if (stopping_) return;  // an event of this batch from before the stop: no new requests now
  char buffer[16 * 1024];
  const auto want = static_cast<std::size_t>(std::clamp<std::int64_t>(event.data, 1, sizeof buffer));
  const ssize_t got = read(fd, buffer, want);
  if (got == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (got <= 0) {
    close_client(fd);  // the client left (EOF or ECONNRESET): results still due to it are dropped
    return;
  }
  client.received_.append(buffer, static_cast<std::size_t>(got));
  std::size_t start = 0;
  for (std::size_t end; (end = client.received_.find('\n', start)) != std::string::npos; start = end + 1) {
    handle_request(fd, client, client.received_.substr(start, end - start));
  }
  client.received_.erase(0, start);
  if (client.received_.size() > kLongestLine) {
    close_client(fd);  // a "line" that never ends
    return;
  }
  flush(fd, client);
}

void SignalServer::handle_request(int fd, Client& client, const std::string& line) {
  std::int64_t number = 0;
  if (line.rfind("echo ", 0) == 0) {
    client.unsent_ += line.substr(5) + "\n";
  } else if (line.rfind("square ", 0) == 0 && parse_square(line.substr(7), number)) {
    // Slow: the worker does it, and its result comes back as an EVFILT_USER event (deliver_results).
    ++client.jobs_;
    worker_.submit(Job{fd, client.serial_, number, 0});
  } else if (line == "stats") {
    client.unsent_ += "reloads " + std::to_string(reloads_) + "\n";
  } else {
    client.unsent_ += "unknown request: say echo TEXT, square N (|N| <= 3000000000) or stats\n";
  }
}

// [snippet: flush]
// Writes what the socket takes now, keeps the rest for EVFILT_WRITE (registered exactly while something is left),
// and closes the client once it is done: when stopping, done means nothing left to send and no job left to do.
void SignalServer::flush(int fd, Client& client) {
  while (!client.unsent_.empty()) {
    const ssize_t sent = write(fd, client.unsent_.data(), client.unsent_.size());
    if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (sent == -1) {
      close_client(fd);
      return;
    }
    client.unsent_.erase(0, static_cast<std::size_t>(sent));
  }
  const bool pending = !client.unsent_.empty();
  if (pending != client.writing_) {
    watch(fd, EVFILT_WRITE, pending ? EV_ADD : EV_DELETE, client.serial_);
    client.writing_ = pending;
  }
  pace_reading(fd, client);
  if (stopping_ && !pending && client.jobs_ == 0) close_client(fd);
}
// [end]

// Back-pressure (lesson 05, step 5): reads no more requests from a client owed kMostOwed bytes or more, until it
// has read enough of them. Its requests wait in the kernel's buffers, and TCP makes it wait. While stopping, the
// registration is gone already (begin_stop): nothing to change.
void SignalServer::pace_reading(int fd, Client& client) {
  const bool read = client.unsent_.size() < kMostOwed;
  if (stopping_ || read == client.reading_) return;
  watch(fd, EVFILT_READ, read ? EV_ENABLE : EV_DISABLE, client.serial_);
  client.reading_ = read;
}

void SignalServer::close_client(int fd) {
  clients_.erase(fd);
  close(fd);  // also removes its registrations
}

int main(int argc, char** argv) {
  std::string config_path;
  const kqlab::Address address = kqlab::parse_arguments(
      argc, argv, "A server that stops gracefully on SIGTERM and re-reads its greeting on SIGHUP.", {},
      {{"--config", "FILE", "its first line is the greeting; SIGHUP reads it again", &config_path}});
  std::string greeting = "hello";
  if (!config_path.empty() && !read_greeting(config_path, greeting)) {
    std::fprintf(stderr, "--config: cannot read a line from %s\n", config_path.c_str());
    return 1;
  }
  std::signal(SIGPIPE, SIG_IGN);
  const int listener = kqlab::open_listener(address);
  SignalServer server(listener, config_path, greeting);
  kqlab::announce_listening(listener);  // after the signals are watched: a SIGHUP from now on is heard
  server.run();
  return 0;  // stopped by SIGTERM or SIGINT, gracefully: a success
}
