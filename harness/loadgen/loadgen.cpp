// loadgen: TCP echo load against a lesson server (or any echo server), every echoed byte checked.
//
//   loadgen --server build/release/bin/solution/01-echo --connections 100 --duration 5
//   loadgen --connect 127.0.0.1:7000 --connections 10000 --size 512 --depth 4 --json -
//
// Each connection sends a stream of `--size`-byte messages, keeping `--depth` of them in flight, and reads the
// echo back. The stream is a stretch of a pseudo-random pattern starting at a place of its own, so a lost,
// repeated, reordered or misdirected byte shows up as a mismatch in the message it lands in. A message's latency
// runs from the write() that sent its first byte to the read() that brought back its last one.
//
// A tool, not a lesson: it drives epoll directly (Linux only, chosen in CMake), so none of the layer's cost is in
// the generator. One thread; on a 2-core machine it is the generator that saturates first, which is why it also
// reports the server's CPU time per round trip: that is what separates one server from another.
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

// ---- Small helpers ---------------------------------------------------------------------------------------------

int64_t now_ns() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec * 1'000'000'000LL + now.tv_nsec;
}

[[noreturn]] void fail(const std::string& what, int error = errno) {
  std::fprintf(stderr, "loadgen: %s: %s\n", what.c_str(), std::strerror(error));
  std::exit(1);
}

const char* const kUsage =
    "usage: loadgen (--server PROGRAM | --connect HOST:PORT) [options]\n"
    "  --server PROGRAM       start PROGRAM --host 127.0.0.1 --port 0 and use the address it announces\n"
    "                         ('listening on HOST:PORT'); it is stopped (SIGTERM) at the end\n"
    "  --connect HOST:PORT    load a server that is already running (numeric address)\n"
    "  --connections N        concurrent connections, 1 to 100000 (default 1); the descriptor limit is raised\n"
    "  --size BYTES           message size (default 64)\n"
    "  --depth K              messages in flight per connection (default 1)\n"
    "  --duration SECONDS     how long to measure (default 5)\n"
    "  --warmup SECONDS       load before measuring, not counted (default 1)\n"
    "  --messages N           a counted run instead: each connection sends exactly N messages, all measured\n"
    "  --connect-per-request  each request on a new connection: connect, send one message, read it back, close\n"
    "  --idle                 connect, one round trip on each connection, print 'idle N connections' and keep\n"
    "                         them open until standard input closes (to measure a server's memory)\n"
    "  --cpu N                run the load generator on CPU N only\n"
    "  --server-cpu N         run the server it starts on CPU N only\n"
    "  --server-pid PID       the server's process, to measure its CPU time (automatic with --server)\n"
    "  --json FILE            write the results as JSON to FILE ('-': standard output, instead of the table)\n";

[[noreturn]] void usage_error(const std::string& problem) {
  std::fprintf(stderr, "loadgen: %s\n%s", problem.c_str(), kUsage);
  std::exit(2);
}

double parse_number(const std::string& option, const std::string& text, double low, double high) {
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno != 0 || value < low || value > high) {
    std::ostringstream problem;
    problem << option << " wants a number from " << low << " to " << high << ", not '" << text << "'";
    usage_error(problem.str());
  }
  return value;
}

// 1234567 -> "1,234,567"
std::string grouped(uint64_t value) {
  const std::string digits = std::to_string(value);
  std::string text;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) text += ',';
    text += digits[i];
  }
  return text;
}

std::string json_string(const std::string& text) {
  std::string quoted = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') quoted += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    quoted += c;
  }
  return quoted + "\"";
}

void pin_to_cpu(int cpu, const char* who) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0)
    fail(std::string("pinning ") + who + " to CPU " + std::to_string(cpu));
}

// ---- Options ---------------------------------------------------------------------------------------------------

struct Options {
  std::string server;  // a program to start, or empty
  std::string host;    // where to connect: --connect, or what the started server announced
  std::string port;
  int connections = 1;
  size_t size = 64;
  int depth = 1;
  double duration = 5;
  double warmup = 1;
  uint64_t messages = 0;  // > 0: a counted run
  bool per_request = false;
  bool idle = false;
  int cpu = -1;
  int server_cpu = -1;
  pid_t server_pid = 0;
  std::string json;  // empty: the table only
};

void split_address(const std::string& text, Options& options) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) usage_error("--connect wants HOST:PORT, not '" + text + "'");
  options.host = text.substr(0, colon);
  if (options.host.front() == '[' && options.host.back() == ']')
    options.host = options.host.substr(1, options.host.size() - 2);
  options.port = text.substr(colon + 1);
}

Options parse_options(int argc, char** argv) {
  Options options;
  const int cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_CONF));
  for (int i = 1; i < argc; ++i) {
    const std::string option = argv[i];
    if (option == "--help" || option == "-h") {
      std::printf("%s", kUsage);
      std::exit(0);
    }
    if (option == "--connect-per-request") {
      options.per_request = true;
      continue;
    }
    if (option == "--idle") {
      options.idle = true;
      continue;
    }
    if (i + 1 == argc) usage_error(option + " needs a value");
    const std::string value = argv[++i];
    if (option == "--server")
      options.server = value;
    else if (option == "--connect")
      split_address(value, options);
    else if (option == "--connections")
      options.connections = static_cast<int>(parse_number(option, value, 1, 100000));
    else if (option == "--size")
      options.size = static_cast<size_t>(parse_number(option, value, 1, 1 << 24));
    else if (option == "--depth")
      options.depth = static_cast<int>(parse_number(option, value, 1, 1024));
    else if (option == "--duration")
      options.duration = parse_number(option, value, 0.01, 86400);
    else if (option == "--warmup")
      options.warmup = parse_number(option, value, 0, 86400);
    else if (option == "--messages")
      options.messages = static_cast<uint64_t>(parse_number(option, value, 1, 1e12));
    else if (option == "--cpu")
      options.cpu = static_cast<int>(parse_number(option, value, 0, cpus - 1));
    else if (option == "--server-cpu")
      options.server_cpu = static_cast<int>(parse_number(option, value, 0, cpus - 1));
    else if (option == "--server-pid")
      options.server_pid = static_cast<pid_t>(parse_number(option, value, 1, 1 << 30));
    else if (option == "--json")
      options.json = value;
    else
      usage_error("unknown option '" + option + "'");
  }
  if (options.server.empty() == options.host.empty())
    usage_error("give either --server PROGRAM or --connect HOST:PORT");
  if (options.per_request && options.depth != 1)
    usage_error("--connect-per-request sends one message per connection: no --depth");
  if (options.per_request && options.messages)
    usage_error("--messages counts messages per connection: not with --connect-per-request");
  if (options.per_request && options.idle) usage_error("--idle keeps connections open: not with --connect-per-request");
  if (options.idle) options.messages = 1;
  return options;
}

// ---- Descriptors -----------------------------------------------------------------------------------------------

// Makes room for `connections` sockets (and the server's, which inherits the limit when started from here).
void raise_descriptor_limit(int connections) {
  const rlim_t needed = static_cast<rlim_t>(connections) + 64;
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) fail("getrlimit(RLIMIT_NOFILE)");
  if (limit.rlim_cur >= needed) return;
  if (limit.rlim_max < needed) {
    rlimit raised{needed, needed};  // only root (CAP_SYS_RESOURCE) may raise the hard limit
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return;
    std::fprintf(stderr,
                 "loadgen: %d connections need %ju descriptors, but this process may open at most %ju (the hard "
                 "limit, ulimit -Hn).\n  Raise it (as root: ulimit -Hn %ju before running, or a nofile line in "
                 "/etc/security/limits.conf), or use fewer connections.\n",
                 connections, static_cast<uintmax_t>(needed), static_cast<uintmax_t>(limit.rlim_max),
                 static_cast<uintmax_t>(needed));
    std::exit(2);
  }
  limit.rlim_cur = needed;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) fail("setrlimit(RLIMIT_NOFILE)");
}

sockaddr_storage resolve(const Options& options, socklen_t& length) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (getaddrinfo(options.host.c_str(), options.port.c_str(), &hints, &found) != 0)
    usage_error("wants a numeric address and port, not '" + options.host + ":" + options.port + "'");
  sockaddr_storage address{};
  std::memcpy(&address, found->ai_addr, found->ai_addrlen);
  length = found->ai_addrlen;
  freeaddrinfo(found);
  return address;
}

// ---- The server, when started from here ------------------------------------------------------------------------

struct StartedServer {
  pid_t pid = 0;
  bool ended = false;  // it exited on its own (a crash?) before we stopped it
  std::string ending;
};

std::string describe_status(int status) {
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + strsignal(WTERMSIG(status));
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

// Starts the server and waits (10 s at most) for its `listening on HOST:PORT` line.
StartedServer start_server(Options& options) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) fail("pipe2");
  const pid_t pid = fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    if (options.server_cpu >= 0) pin_to_cpu(options.server_cpu, "the server");
    const char* program = options.server.c_str();
    execl(program, program, "--host", "127.0.0.1", "--port", "0", static_cast<char*>(nullptr));
    std::fprintf(stderr, "loadgen: cannot start %s: %s\n", program, std::strerror(errno));
    _exit(127);
  }
  close(out[1]);
  std::string seen;
  const int64_t deadline = now_ns() + 10'000'000'000LL;
  for (;;) {
    const size_t line_end = seen.find('\n');
    if (line_end != std::string::npos) {
      const std::string line = seen.substr(0, line_end);
      seen.erase(0, line_end + 1);
      if (line.rfind("listening on ", 0) == 0) {
        split_address(line.substr(13), options);
        break;
      }
      continue;
    }
    pollfd wait{out[0], POLLIN, 0};
    const int64_t left_ms = (deadline - now_ns()) / 1'000'000;
    char chunk[512];
    ssize_t got = 0;
    if (left_ms <= 0 || poll(&wait, 1, static_cast<int>(left_ms)) <= 0 ||
        (got = read(out[0], chunk, sizeof chunk)) <= 0) {
      kill(pid, SIGKILL);
      int status = 0;
      waitpid(pid, &status, 0);
      std::fprintf(stderr, "loadgen: %s never said 'listening on HOST:PORT' on stdout (it %s)\n",
                   options.server.c_str(),
                   left_ms <= 0 ? "was still running after 10 s" : describe_status(status).c_str());
      std::exit(1);
    }
    seen.append(chunk, static_cast<size_t>(got));
  }
  // Its stdout stays open, unread: a lesson server prints nothing more there.
  options.server_pid = pid;
  return {pid, false, ""};
}

void stop_server(StartedServer& server) {
  int status = 0;
  if (waitpid(server.pid, &status, WNOHANG) == server.pid) {
    server.ended = true;
    server.ending = describe_status(status);
    return;
  }
  kill(server.pid, SIGTERM);
  waitpid(server.pid, &status, 0);
}

// CPU time the process has used so far, in seconds: the scheduler's nanosecond count summed over its threads
// (/proc/PID/task/*/schedstat) when the kernel keeps it, else utime + stime from /proc/PID/stat (clock ticks).
double process_cpu_seconds(pid_t pid, std::string* source) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  if (DIR* dir = opendir(tasks.c_str())) {
    uint64_t total = 0;
    bool found = false;
    while (const dirent* entry = readdir(dir)) {
      if (entry->d_name[0] == '.') continue;
      std::ifstream stat(tasks + "/" + entry->d_name + "/schedstat");
      uint64_t ns = 0;
      if (stat >> ns) {
        total += ns;
        found = true;
      }
    }
    closedir(dir);
    if (found) {
      if (source) *source = "schedstat";
      return static_cast<double>(total) / 1e9;
    }
  }
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // field 3 is the state; 14 utime, 15 stime
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  if (source) *source = "stat";
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double own_cpu_seconds() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// ---- What is sent, and how long it took ------------------------------------------------------------------------

// A pseudo-random byte pattern, stored twice over so that any stretch of up to kLength bytes from any starting
// place is contiguous. Connection streams start at different places in it.
class Pattern {
 public:
  static constexpr uint64_t kLength = 1 << 20;

  Pattern() : bytes_(2 * kLength) {
    uint64_t state = 0x9E3779B97F4A7C15ULL;
    for (uint64_t i = 0; i < kLength; ++i) {
      state ^= state << 13;  // xorshift64
      state ^= state >> 7;
      state ^= state << 17;
      bytes_[i] = bytes_[i + kLength] = static_cast<char>(state >> 56);
    }
  }

  // Where stream number `stream` starts: distinct for the first 2^20 streams (an odd step modulo a power of 2).
  static uint64_t base(uint64_t stream) { return (stream * 104729) % kLength; }

  // The bytes of the stream starting at `base`, from stream offset `offset` on (kLength of them at least).
  const char* at(uint64_t base, uint64_t offset) const { return &bytes_[(base + offset) % kLength]; }

 private:
  std::vector<char> bytes_;
};

// Latencies in nanoseconds, in buckets 1/64 of a power of two wide (HdrHistogram's layout): percentiles to within
// about 1.6%, in a fixed few kilobytes whatever the number of samples.
class Histogram {
 public:
  void add(int64_t ns) {
    const auto value = static_cast<uint64_t>(std::max<int64_t>(ns, 0));
    ++counts_[std::min(index(value), counts_.size() - 1)];
    ++total_;
    max_ = std::max(max_, value);
    sum_ += value;
  }
  void clear() { *this = Histogram(); }
  uint64_t total() const { return total_; }
  double mean_us() const { return total_ ? static_cast<double>(sum_) / static_cast<double>(total_) / 1e3 : 0; }
  double max_us() const { return static_cast<double>(max_) / 1e3; }

  // The value below which a fraction `q` of the samples lie, in microseconds (a bucket's middle).
  double percentile_us(double q) const {
    if (total_ == 0) return 0;
    const auto rank = static_cast<uint64_t>(q * static_cast<double>(total_ - 1)) + 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min(middle(i), static_cast<double>(max_)) / 1e3;
    }
    return max_us();
  }

 private:
  static constexpr int kSubBits = 6;  // 64 buckets per power of two
  static size_t index(uint64_t value) {
    const int top = 63 - __builtin_clzll(value | 1);
    if (top < kSubBits) return value;
    const int shift = top - kSubBits;
    return static_cast<size_t>(shift + 1) * (1 << kSubBits) + ((value >> shift) - (1 << kSubBits));
  }
  static double middle(size_t i) {
    if (i < (1 << kSubBits)) return static_cast<double>(i);
    const size_t shift = i / (1 << kSubBits) - 1;
    const double low = static_cast<double>(((i % (1 << kSubBits)) + (1 << kSubBits)) << shift);
    return low + static_cast<double>((uint64_t{1} << shift) - 1) / 2;
  }

  std::vector<uint64_t> counts_ = std::vector<uint64_t>(60 * (1 << kSubBits));
  uint64_t total_ = 0;
  uint64_t max_ = 0;
  uint64_t sum_ = 0;
};

// ---- The load --------------------------------------------------------------------------------------------------

struct Connection {
  int fd = -1;
  uint32_t generation = 0;  // in epoll's data with the index: an event for a closed socket is recognised
  uint64_t base = 0;        // where this connection's stream starts in the pattern
  uint64_t sent = 0;        // stream bytes written
  uint64_t received = 0;    // stream bytes read back and checked
  bool connecting = false;
  bool writing = false;      // EPOLLOUT requested: the last write did not take everything
  bool bad_message = false;  // a byte of the message being received differed from what was sent
  int64_t connect_started = 0;
  std::vector<int64_t> sent_at;  // when each message in flight was sent, by message number modulo depth
};

struct Results {
  uint64_t round_trips = 0;  // measured
  uint64_t round_trips_total = 0;
  uint64_t mismatches = 0;  // messages with any byte wrong, warm-up included
  uint64_t connects = 0;
  std::map<std::string, uint64_t> errors;  // "what: strerror" -> how many, warm-up included
  Histogram latency;
  double seconds = 0;  // the measured window
  double server_cpu = -1;
  std::string server_cpu_source;
  double loadgen_cpu = 0;
  int open_at_end = 0;
  bool stalled = false;
};

class Load {
 public:
  Load(const Options& options, const sockaddr_storage& address, socklen_t length);

  void connect_all();  // opens every connection and waits until each has connected or failed
  void run();          // the load itself: the warm-up and the measured window, or a counted run
  void hold_idle();    // --idle: reports, then keeps the connections open until stdin closes
  Results& results() { return results_; }

 private:
  enum class Phase { connecting, warmup, measuring, done };

  bool open(Connection& c);
  void close_connection(Connection& c);
  void lose(Connection& c, const char* what, int error);
  void replace_later(Connection& c);
  void on_event(uint64_t data, uint32_t events);
  void on_connected(Connection& c);
  void receive(Connection& c);
  void send(Connection& c);
  void finish_message(Connection& c, uint64_t message, int64_t now);
  uint64_t allowed(const Connection& c) const;
  void watch(Connection& c, uint32_t events, int op);
  void set_writing(Connection& c, bool writing);
  bool all_done() const;
  void begin_measuring(int64_t now);
  void end_measuring(int64_t now);
  int poll_events(int timeout_ms);

  const Options& options_;
  sockaddr_storage address_;
  socklen_t length_;
  Pattern pattern_;
  int epoll_fd_;
  std::vector<Connection> connections_;
  std::vector<size_t> to_reopen_;  // --connect-per-request: closed connections to replace after this batch
  uint64_t next_stream_ = 0;
  int connecting_ = 0;  // connects under way
  int open_ = 0;        // sockets open
  Phase phase_ = Phase::connecting;
  int64_t progress_at_ = 0;  // the last time a message came back (stall detection)
  int64_t measure_start_ = 0;
  double server_cpu_start_ = 0;
  double own_cpu_start_ = 0;
  Results results_;
};

Load::Load(const Options& options, const sockaddr_storage& address, socklen_t length)
    : options_(options),
      address_(address),
      length_(length),
      epoll_fd_(epoll_create1(EPOLL_CLOEXEC)),
      connections_(static_cast<size_t>(options.connections)) {
  if (epoll_fd_ < 0) fail("epoll_create1");
  for (Connection& c : connections_) c.sent_at.resize(static_cast<size_t>(options_.depth));
}

void Load::watch(Connection& c, uint32_t events, int op) {
  epoll_event event{};
  event.events = events;
  event.data.u64 = (uint64_t{c.generation} << 32) | static_cast<uint64_t>(&c - connections_.data());
  if (epoll_ctl(epoll_fd_, op, c.fd, &event) != 0) fail("epoll_ctl");
}

void Load::set_writing(Connection& c, bool writing) {
  if (c.writing == writing) return;
  c.writing = writing;
  watch(c, writing ? EPOLLIN | EPOLLOUT : EPOLLIN, EPOLL_CTL_MOD);
}

// Starts a non-blocking connect; false (and counted) if it failed at once.
bool Load::open(Connection& c) {
  c.fd = socket(address_.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c.fd < 0) {
    if (errno == EMFILE || errno == ENFILE) fail("socket (the descriptor limit)");
    fail("socket");
  }
  const int on = 1;
  setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);  // small messages go out at once
  ++open_;
  ++c.generation;
  c.base = Pattern::base(next_stream_++);
  c.sent = c.received = 0;
  c.writing = c.bad_message = false;
  c.connect_started = now_ns();
  if (connect(c.fd, reinterpret_cast<const sockaddr*>(&address_), length_) != 0 && errno != EINPROGRESS) {
    lose(c, "connect", errno);
    return false;
  }
  c.connecting = true;
  ++connecting_;
  watch(c, EPOLLOUT, EPOLL_CTL_ADD);
  return true;
}

void Load::close_connection(Connection& c) {
  if (c.connecting) --connecting_;
  c.connecting = false;
  close(c.fd);  // also leaves the epoll set
  c.fd = -1;
  --open_;
}

// Counts a failure and closes the connection; with --connect-per-request a new one takes its place.
void Load::lose(Connection& c, const char* what, int error) {
  std::string key = what;
  if (error) key += std::string(": ") + std::strerror(error);
  ++results_.errors[key];
  close_connection(c);
  replace_later(c);
}

// With --connect-per-request, a closed connection's place is taken by a new one after the current batch of
// events (so that a server refusing every connection costs one attempt per wait, not a busy loop).
void Load::replace_later(Connection& c) {
  if (options_.per_request && (phase_ == Phase::warmup || phase_ == Phase::measuring))
    to_reopen_.push_back(static_cast<size_t>(&c - connections_.data()));
}

void Load::on_connected(Connection& c) {
  c.connecting = false;
  --connecting_;
  ++results_.connects;
  watch(c, EPOLLIN, EPOLL_CTL_MOD);
  if (phase_ != Phase::connecting) send(c);
}

// How far into its stream a connection may have sent by now: `depth` messages beyond those that came back,
// within the run's total (a counted run, or one message per connection with --connect-per-request).
uint64_t Load::allowed(const Connection& c) const {
  if (phase_ == Phase::done || phase_ == Phase::connecting) return c.sent;
  uint64_t messages = c.received / options_.size + static_cast<uint64_t>(options_.depth);
  if (options_.per_request) messages = 1;
  if (options_.messages) messages = std::min(messages, options_.messages);
  return std::max(c.sent, messages * options_.size);
}

void Load::send(Connection& c) {
  const uint64_t limit = allowed(c);
  while (c.sent < limit) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(limit - c.sent, 256 * 1024));
    const ssize_t put = ::send(c.fd, pattern_.at(c.base, c.sent), chunk, MSG_NOSIGNAL);
    if (put < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        set_writing(c, true);
        return;
      }
      lose(c, "write", errno);
      return;
    }
    // Every message whose first byte went out in this write was sent now.
    const int64_t now = now_ns();
    const uint64_t end = c.sent + static_cast<uint64_t>(put);
    for (uint64_t m = (c.sent + options_.size - 1) / options_.size; m * options_.size < end; ++m)
      c.sent_at[m % c.sent_at.size()] = now;
    c.sent = end;
  }
  set_writing(c, false);
}

void Load::receive(Connection& c) {
  char buffer[64 * 1024];
  const ssize_t got = read(c.fd, buffer, sizeof buffer);
  if (got == 0) {
    lose(c, "the server closed the connection", 0);
    return;
  }
  if (got < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) lose(c, "read", errno);
    return;
  }
  const int64_t now = now_ns();
  if (c.received + static_cast<uint64_t>(got) > c.sent) {
    ++results_.mismatches;  // more came back than was sent
    lose(c, "the server sent back more than it was sent", 0);
    return;
  }
  // Check the bytes message by message, so that a difference is charged to the message it is in.
  for (size_t at = 0; at < static_cast<size_t>(got);) {
    const uint64_t message = c.received / options_.size;
    const uint64_t message_end = (message + 1) * options_.size;
    const size_t piece =
        static_cast<size_t>(std::min<uint64_t>(static_cast<uint64_t>(got) - at, message_end - c.received));
    if (std::memcmp(buffer + at, pattern_.at(c.base, c.received), piece) != 0) c.bad_message = true;
    c.received += piece;
    at += piece;
    if (c.received == message_end) finish_message(c, message, now);
  }
  if (options_.per_request && c.received == options_.size) {
    close_connection(c);  // the request is done: the next one on a new connection
    replace_later(c);
    return;
  }
  send(c);
}

void Load::finish_message(Connection& c, uint64_t message, int64_t now) {
  progress_at_ = now;
  ++results_.round_trips_total;
  if (c.bad_message) ++results_.mismatches;
  c.bad_message = false;
  if (phase_ != Phase::measuring) return;
  ++results_.round_trips;
  const int64_t sent = options_.per_request ? c.connect_started : c.sent_at[message % c.sent_at.size()];
  results_.latency.add(now - sent);
}

void Load::on_event(uint64_t data, uint32_t events) {
  const auto index = static_cast<size_t>(data & 0xffffffff);
  Connection& c = connections_[index];
  if (c.fd < 0 || c.generation != static_cast<uint32_t>(data >> 32)) return;  // closed earlier in this batch
  if (c.connecting) {
    int error = 0;
    socklen_t size = sizeof error;
    getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &error, &size);
    if (error)
      lose(c, "connect", error);
    else if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
      on_connected(c);
    return;
  }
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) receive(c);
  if (c.fd >= 0 && c.generation == static_cast<uint32_t>(data >> 32) && (events & EPOLLOUT)) send(c);
}

int Load::poll_events(int timeout_ms) {
  epoll_event events[256];
  const int n = epoll_wait(epoll_fd_, events, 256, timeout_ms);
  if (n < 0 && errno != EINTR) fail("epoll_wait");
  for (int i = 0; i < n; ++i) on_event(events[i].data.u64, events[i].events);
  std::vector<size_t> reopen;
  reopen.swap(to_reopen_);
  for (const size_t index : reopen) open(connections_[index]);
  return n;
}

void Load::connect_all() {
  // A few hundred handshakes at a time: thousands at once overflow the server's SYN and accept queues, and a
  // dropped SYN is retried only after a second.
  constexpr int kAtOnce = 256;
  size_t next = 0;
  const int64_t deadline = now_ns() + 30'000'000'000LL;
  while (next < connections_.size() || connecting_ > 0) {
    while (next < connections_.size() && connecting_ < kAtOnce) open(connections_[next++]);
    if (now_ns() > deadline) break;
    poll_events(100);
  }
  for (Connection& c : connections_) {
    if (c.connecting) lose(c, "connect: no answer within 30 s", 0);
  }
}

bool Load::all_done() const {
  for (const Connection& c : connections_) {
    if (c.fd >= 0 && c.received < options_.messages * options_.size) return false;
  }
  return true;
}

void Load::begin_measuring(int64_t now) {
  phase_ = Phase::measuring;
  measure_start_ = now;
  results_.round_trips = 0;
  results_.latency.clear();
  if (options_.server_pid) server_cpu_start_ = process_cpu_seconds(options_.server_pid, nullptr);
  own_cpu_start_ = own_cpu_seconds();
}

void Load::end_measuring(int64_t now) {
  phase_ = Phase::done;
  results_.seconds = static_cast<double>(now - measure_start_) / 1e9;
  if (options_.server_pid) {
    results_.server_cpu = process_cpu_seconds(options_.server_pid, &results_.server_cpu_source) - server_cpu_start_;
  }
  results_.loadgen_cpu = own_cpu_seconds() - own_cpu_start_;
}

void Load::run() {
  const int64_t start = now_ns();
  progress_at_ = start;
  if (options_.messages) {
    begin_measuring(start);  // a counted run is measured whole
  } else {
    phase_ = Phase::warmup;
  }
  if (options_.per_request) {
    for (Connection& c : connections_) open(c);
  } else {
    for (Connection& c : connections_) {
      if (c.fd >= 0) send(c);
    }
  }
  const int64_t warmup_end = start + static_cast<int64_t>(options_.warmup * 1e9);
  const int64_t measure_end = warmup_end + static_cast<int64_t>(options_.duration * 1e9);
  for (;;) {
    const int64_t now = now_ns();
    if (options_.messages) {
      if (all_done()) break;
      if (now - progress_at_ > 10'000'000'000LL) {  // nothing came back for 10 s: say so rather than hang
        results_.stalled = true;
        ++results_.errors["stalled: no echo for 10 s"];
        break;
      }
    } else {
      if (phase_ == Phase::warmup && now >= warmup_end) begin_measuring(now);
      if (now >= measure_end) break;
    }
    const int64_t next = options_.messages ? now + 100'000'000 : (phase_ == Phase::warmup ? warmup_end : measure_end);
    poll_events(static_cast<int>(std::clamp<int64_t>((next - now + 999'999) / 1'000'000, 0, 100)));
  }
  end_measuring(now_ns());
  results_.open_at_end = open_;
}

void Load::hold_idle() {
  std::printf("idle %d connections\n", open_);
  std::fflush(stdout);
  char sink[256];
  while (read(STDIN_FILENO, sink, sizeof sink) > 0) {
  }
}

// ---- Reporting -------------------------------------------------------------------------------------------------

std::string describe_load(const Options& options) {
  std::ostringstream text;
  text << options.connections << (options.connections == 1 ? " connection" : " connections") << ", " << options.size
       << "-byte messages";
  if (options.per_request) {
    text << ", a new connection per request";
  } else {
    text << ", " << options.depth << " in flight each";
  }
  if (options.messages) {
    text << ", " << options.messages << " messages each";
  } else {
    text << ", " << options.duration << " s measured after " << options.warmup << " s of warm-up";
  }
  return text.str();
}

void print_table(const Options& options, const Results& r) {
  const double rate = r.seconds > 0 ? static_cast<double>(r.round_trips) / r.seconds : 0;
  std::printf("loadgen: %s\n", describe_load(options).c_str());
  std::printf("  %-20s %s in %.2f s: %s/s, %.2f MB/s echoed\n", "round trips", grouped(r.round_trips).c_str(),
              r.seconds, grouped(static_cast<uint64_t>(rate)).c_str(), rate * static_cast<double>(options.size) / 1e6);
  std::printf("  %-20s p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us\n", "latency", r.latency.percentile_us(0.5),
              r.latency.percentile_us(0.99), r.latency.percentile_us(0.999), r.latency.max_us());
  uint64_t errors = 0;
  for (const auto& [what, count] : r.errors) errors += count;
  std::printf("  %-20s %s\n", "errors", grouped(errors).c_str());
  for (const auto& [what, count] : r.errors)
    std::printf("  %-20s   %s x %s\n", "", grouped(count).c_str(), what.c_str());
  std::printf("  %-20s %s\n", "mismatches", grouped(r.mismatches).c_str());
  std::printf("  %-20s %d of %d open at the end\n", "connections", r.open_at_end, options.connections);
  if (r.server_cpu >= 0) {
    const double per = r.round_trips ? r.server_cpu / static_cast<double>(r.round_trips) * 1e6 : 0;
    std::printf("  %-20s %.3f s (%.0f%% of a core), %.2f us per round trip (pid %d)\n", "server CPU", r.server_cpu,
                r.seconds > 0 ? 100 * r.server_cpu / r.seconds : 0, per, static_cast<int>(options.server_pid));
  }
  std::printf("  %-20s %.3f s (%.0f%% of a core)\n", "load generator CPU", r.loadgen_cpu,
              r.seconds > 0 ? 100 * r.loadgen_cpu / r.seconds : 0);
}

std::string to_json(const Options& options, const Results& r) {
  std::ostringstream json;
  json.precision(6);
  const double rate = r.seconds > 0 ? static_cast<double>(r.round_trips) / r.seconds : 0;
  uint64_t errors = 0;
  for (const auto& [what, count] : r.errors) errors += count;
  json << "{\"connections\": " << options.connections << ", \"size\": " << options.size
       << ", \"depth\": " << options.depth << ", \"mode\": \""
       << (options.idle          ? "idle"
           : options.per_request ? "connect-per-request"
                                 : "persistent")
       << "\""
       << ", \"messages_per_connection\": " << options.messages << ", \"warmup_s\": " << options.warmup
       << ", \"seconds\": " << r.seconds << ", \"round_trips\": " << r.round_trips
       << ", \"round_trips_total\": " << r.round_trips_total << ", \"throughput_per_s\": " << rate
       << ", \"bytes_per_s\": " << rate * static_cast<double>(options.size)
       << ", \"latency_us\": {\"p50\": " << r.latency.percentile_us(0.5)
       << ", \"p99\": " << r.latency.percentile_us(0.99) << ", \"p999\": " << r.latency.percentile_us(0.999)
       << ", \"max\": " << r.latency.max_us() << ", \"mean\": " << r.latency.mean_us() << "}, \"errors\": " << errors
       << ", \"error_kinds\": {";
  const char* separator = "";
  for (const auto& [what, count] : r.errors) {
    json << separator << json_string(what) << ": " << count;
    separator = ", ";
  }
  json << "}, \"mismatches\": " << r.mismatches << ", \"connects\": " << r.connects
       << ", \"open_at_end\": " << r.open_at_end << ", \"stalled\": " << (r.stalled ? "true" : "false")
       << ", \"server_pid\": " << options.server_pid;
  if (r.server_cpu >= 0) {
    json << ", \"server_cpu_s\": " << r.server_cpu << ", \"server_cpu_source\": \"" << r.server_cpu_source << "\""
         << ", \"server_cpu_us_per_round_trip\": "
         << (r.round_trips ? r.server_cpu / static_cast<double>(r.round_trips) * 1e6 : 0);
  }
  json << ", \"loadgen_cpu_s\": " << r.loadgen_cpu << "}\n";
  return json.str();
}

}  // namespace

int main(int argc, char** argv) {
  Options options = parse_options(argc, argv);
  std::signal(SIGPIPE, SIG_IGN);
  raise_descriptor_limit(options.connections);
  StartedServer server;
  if (!options.server.empty()) server = start_server(options);
  if (options.cpu >= 0) pin_to_cpu(options.cpu, "the load generator");

  socklen_t length = 0;
  const sockaddr_storage address = resolve(options, length);
  Load load(options, address, length);
  if (!options.per_request) load.connect_all();
  load.run();
  if (options.idle) load.hold_idle();
  Results& results = load.results();
  if (server.pid) {
    stop_server(server);
    if (server.ended) ++results.errors["the server " + server.ending + " during the run"];
  }

  if (options.json != "-") print_table(options, results);
  if (!options.json.empty()) {
    const std::string json = to_json(options, results);
    if (options.json == "-") {
      std::fputs(json.c_str(), stdout);
    } else if (std::FILE* file = std::fopen(options.json.c_str(), "w")) {
      std::fputs(json.c_str(), file);
      std::fclose(file);
    } else {
      fail("writing " + options.json);
    }
  }
  uint64_t errors = 0;
  for (const auto& [what, count] : results.errors) errors += count;
  return results.mismatches || errors ? 1 : 0;
}
