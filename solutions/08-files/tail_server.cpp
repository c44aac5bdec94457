// Lesson 08: following a file, with EVFILT_READ and EVFILT_VNODE.
//
// tail -f for the network. The server follows one log file (--log FILE) from its end: every client connected gets
// every line appended to it from then on, in order. When the log is rotated (renamed, and a new file created under
// its name), the server reads the old file to its end and follows the new one; when the log is truncated, it starts
// again from the new start. Read lessons/08-files/README.md alongside: its numbered steps are the TODO(N) gaps of
// the exercise.
// The `// [snippet: NAME]` ... `// [end]` lines mark the code README.md quotes: leave them where they are.
//
// A client sends nothing. It gets one line, `following FILE`, when it is subscribed, then the log's lines.
#include <fcntl.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <string>
#include <unordered_map>
#include <vector>

#include "kevent_format.hpp"
#include "setup.hpp"

constexpr std::size_t kMostBehind = 8 << 20;  // a client further behind than this is dropped

struct Client {
  std::uint64_t serial_ = 0;  // this connection's number, in the udata of its events (see client_for)
  std::string unsent_;        // lines not yet written to it
  bool writing_ = false;      // is EVFILT_WRITE registered for it? Exactly while unsent_ is not empty.
};

static void* udata_of(std::uint64_t serial) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(serial)); }

// The directory part of a path: where a file of that name is created, renamed or deleted.
static std::string directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

static int open_or_fail(const std::string& path, int flags) {
  const int fd = open(path.c_str(), flags | O_CLOEXEC);
  if (fd == -1) kqlab::fail("open " + path);
  return fd;
}

class TailServer {
 public:
  // Opens the log at its end and starts following it, and registers the listening socket.
  TailServer(int listener, std::string path);

  [[noreturn]] void run();

 private:
  void watch(int fd, short filter, unsigned short flags, unsigned int fflags = 0, std::uint64_t serial = 0);
  void watch_file();
  void dispatch(const struct kevent& event);
  void on_file_event(const struct kevent& event);
  void catch_up();
  void check_truncation();
  bool read_appended();
  void check_name();
  void broadcast(const std::string& lines);
  void accept_clients(const struct kevent& event);
  Client* client_for(const struct kevent& event);
  void on_client_readable(int fd, const struct kevent& event);
  void flush(int fd, Client& client);
  void close_client(int fd);

  // What happens to the followed file that we want to hear of: its end under its name (deleted, or renamed: a
  // rotation), and any change to its content or size (written, grown, truncated: NOTE_ATTRIB on BSD, NOTE_WRITE on
  // Linux).
  static constexpr unsigned int kFileNotes = NOTE_DELETE | NOTE_RENAME | NOTE_WRITE | NOTE_EXTEND | NOTE_ATTRIB;
  static constexpr int kChunksPerEvent = 16;            // 16 × 64 KiB read per event at most: others get a turn
  static constexpr std::size_t kLongestLine = 1 << 20;  // a "line" longer than this is cut

  int kq_;
  int listener_;
  int spare_;  // a descriptor kept open to be given up at the descriptor limit (lesson 05, step 4)
  const std::string path_;
  int file_;             // the file followed: the one the log's name led to when we last looked
  int directory_;        // the log's directory, watched for new names in it (a new log after a rotation)
  std::string partial_;  // the end of the file after its last newline: the start of a line not finished yet
  std::uint64_t next_serial_ = 1;
  std::unordered_map<int, Client> clients_;
};

// [snippet: constructor]
TailServer::TailServer(int listener, std::string path)
    : kq_(kqueue()), listener_(listener), spare_(open_or_fail("/dev/null", O_RDONLY)), path_(std::move(path)),
      file_(open_or_fail(path_, O_RDONLY)), directory_(open_or_fail(directory_of(path_), O_RDONLY)) {
  if (kq_ == -1) kqlab::fail("kqueue");
  watch(listener_, EVFILT_READ, EV_ADD);
  // tail -f starts at the end: clients get what is appended from now on.
  if (lseek(file_, 0, SEEK_END) == -1) kqlab::fail("lseek " + path_);
  watch_file();
  // A name's life is the directory's business: creating, renaming or deleting an entry writes the directory, and
  // EVFILT_VNODE on the directory reports it as NOTE_WRITE. That is how a new log under the same name is noticed.
  watch(directory_, EVFILT_VNODE, EV_ADD | EV_CLEAR, NOTE_WRITE);
}
// [end]

// Applies one change to the queue and stops the server with a message naming it if the kernel refuses it.
void TailServer::watch(int fd, short filter, unsigned short flags, unsigned int fflags, std::uint64_t serial) {
  struct kevent change;
  EV_SET(&change, fd, filter, flags | EV_RECEIPT, fflags, 0, udata_of(serial));
  struct kevent receipt;
  if (kevent(kq_, &change, 1, &receipt, 1, nullptr) == -1) kqlab::fail("kevent");
  if ((receipt.flags & EV_ERROR) && receipt.data != 0) {
    kqlab::fail("kevent(" + kqlab::describe(change) + ")", static_cast<int>(receipt.data));
  }
}

// Registers what we want to hear about file_: new bytes to read, and what happens to the file itself.
void TailServer::watch_file() {
  // EVFILT_READ on a regular file: active while the offset is not at the end of the file, with data = the bytes
  // past the offset (negative if the file is now shorter than the offset). Level-triggered: it comes back on every
  // wait while something is left to read, and says nothing at the end, until the file grows.
  watch(file_, EVFILT_READ, EV_ADD);
  // EVFILT_VNODE: what happens to the file, in fflags. EV_CLEAR: the notes are reset once reported; without it,
  // the first note would stay set and the event would come back on every wait.
  watch(file_, EVFILT_VNODE, EV_ADD | EV_CLEAR, kFileNotes);
}

void TailServer::run() {
  struct kevent events[64];
  for (;;) {
    const int ready = kevent(kq_, nullptr, 0, events, static_cast<int>(std::size(events)), nullptr);
    if (ready == -1) {
      if (errno == EINTR) continue;
      kqlab::fail("kevent");
    }
    for (int i = 0; i < ready; ++i) dispatch(events[i]);
  }
}

// [snippet: dispatch]
// The file's and the directory's events carry udata 0; a client's, its serial number (never 0). An event about a
// number that is now someone else's, closed earlier in this batch, is recognised by that.
void TailServer::dispatch(const struct kevent& event) {
  const int fd = static_cast<int>(event.ident);
  if (fd == listener_) {
    accept_clients(event);
  } else if (fd == file_ && event.udata == udata_of(0)) {
    on_file_event(event);
  } else if (fd == directory_ && event.udata == udata_of(0)) {
    check_name();  // an entry of the directory changed: is the log's name still leading to our file?
  } else if (Client* client = client_for(event); client == nullptr) {
    // A stale event: its client was closed earlier in this batch.
  } else if (event.filter == EVFILT_READ) {
    on_client_readable(fd, event);
  } else if (event.filter == EVFILT_WRITE) {
    flush(fd, *client);
  }
}
// [end]

// [snippet: on-file-event]
// EVFILT_READ (something to read, or the file shrank) or EVFILT_VNODE (something happened to the file) on file_.
void TailServer::on_file_event(const struct kevent& event) {
  catch_up();
  // Renamed or deleted: the file is no longer the log, but it may still be written to (the program that logs
  // keeps its descriptor until it reopens the log by name). Keep following it until the name leads elsewhere.
  if (event.filter == EVFILT_VNODE && (event.fflags & (NOTE_RENAME | NOTE_DELETE))) check_name();
}
// [end]

void TailServer::catch_up() {
  check_truncation();
  read_appended();
}

// A file shorter than our offset has been truncated (logrotate's copytruncate, `> file`): what follows is new
// content from its start.
void TailServer::check_truncation() {
  struct stat file;
  const off_t offset = lseek(file_, 0, SEEK_CUR);
  if (offset == -1 || fstat(file_, &file) == -1) kqlab::fail("fstat " + path_);
  if (file.st_size >= offset) return;
  std::fprintf(stderr, "%s: truncated to %lld bytes: following from its start\n", path_.c_str(),
               static_cast<long long>(file.st_size));
  if (lseek(file_, 0, SEEK_SET) == -1) kqlab::fail("lseek " + path_);
  partial_.clear();  // the start of a line whose end was cut off
}

// Reads what was appended, up to kChunksPerEvent chunks, and sends every whole line to every client. Returns true
// if it stopped at that bound (more may be waiting: the level-triggered EVFILT_READ comes back for it).
bool TailServer::read_appended() {
  char buffer[64 * 1024];
  for (int chunk = 0; chunk < kChunksPerEvent; ++chunk) {
    const ssize_t got = read(file_, buffer, sizeof buffer);
    if (got == 0) return false;  // the end of the file, for now: not an end of anything, the file may grow
    if (got == -1) {
      if (errno == EINTR) continue;
      kqlab::fail("read " + path_);
    }
    partial_.append(buffer, static_cast<std::size_t>(got));
    const auto last_newline = partial_.rfind('\n');
    if (last_newline != std::string::npos) {
      broadcast(partial_.substr(0, last_newline + 1));
      partial_.erase(0, last_newline + 1);
    } else if (partial_.size() > kLongestLine) {
      broadcast(partial_ + "\n");
      partial_.clear();
    }
  }
  return true;
}

// Rotation: if the log's name now leads to another file, reads the old one to its end and follows the new one.
void TailServer::check_name() {
  const int fresh = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fresh == -1) {
    // ENOENT: renamed or deleted, and no new file yet. The directory's NOTE_WRITE brings us back when it comes.
    if (errno != ENOENT) std::perror(("open " + path_).c_str());
    return;
  }
  struct stat named, followed;
  if (fstat(fresh, &named) == -1 || fstat(file_, &followed) == -1) kqlab::fail("fstat " + path_);
  if (named.st_dev == followed.st_dev && named.st_ino == followed.st_ino) {
    close(fresh);  // the same file: nothing has changed for us
    return;
  }
  // What was written to the old file before the new one appeared is part of the log: read it all first.
  check_truncation();
  while (read_appended()) {
  }
  if (!partial_.empty()) broadcast(partial_ + "\n");  // its last line never got its newline
  partial_.clear();
  close(file_);  // and its knotes with it
  file_ = fresh;
  std::fprintf(stderr, "%s: a new file: following it from its start\n", path_.c_str());
  watch_file();  // EVFILT_READ reports at once what the new file holds already
}

// Queues `lines` for every client; one that has fallen too far behind is dropped rather than buffered forever.
void TailServer::broadcast(const std::string& lines) {
  std::vector<int> fds;
  for (const auto& [fd, client] : clients_) fds.push_back(fd);
  for (const int fd : fds) {
    Client& client = clients_.at(fd);
    if (client.unsent_.size() > kMostBehind) {
      std::fprintf(stderr, "client %llu is %zu bytes behind: dropped\n",
                   static_cast<unsigned long long>(client.serial_), client.unsent_.size());
      close_client(fd);
      continue;
    }
    client.unsent_ += lines;
    flush(fd, client);
  }
}

void TailServer::accept_clients(const struct kevent& event) {
  for (std::int64_t waiting = event.data; waiting > 0; --waiting) {
    const int fd = accept(listener_, nullptr, nullptr);
    if (fd == -1 && (errno == EMFILE || errno == ENFILE)) {
      // Out of descriptors (lesson 05, step 4): the connection stays queued and the level-triggered listener
      // reports it again at once. Give up the spare, accept the connection on it, close it, take the spare back.
      close(spare_);
      if (const int refused = accept(listener_, nullptr, nullptr); refused != -1) close(refused);
      spare_ = open_or_fail("/dev/null", O_RDONLY);
      continue;
    }
    if (fd == -1) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED) std::perror("accept");
      return;
    }
    kqlab::set_nonblocking(fd);
    Client& client = clients_[fd];
    client.serial_ = next_serial_++;
    watch(fd, EVFILT_READ, EV_ADD, 0, client.serial_);  // only to hear the client leave
    client.unsent_ = "following " + path_ + "\n";
    flush(fd, client);
  }
}

Client* TailServer::client_for(const struct kevent& event) {
  const auto found = clients_.find(static_cast<int>(event.ident));
  if (found == clients_.end() || udata_of(found->second.serial_) != event.udata) return nullptr;
  return &found->second;
}

// A client has nothing to say: what it sends is read and dropped, and its EOF or a reset closes it.
void TailServer::on_client_readable(int fd, const struct kevent& event) {
  char buffer[4096];
  const auto want = static_cast<std::size_t>(std::clamp<std::int64_t>(event.data, 1, sizeof buffer));
  const ssize_t got = read(fd, buffer, want);
  if (got == 0 || (got == -1 && errno != EAGAIN && errno != EWOULDBLOCK)) close_client(fd);
}

void TailServer::flush(int fd, Client& client) {
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
    watch(fd, EVFILT_WRITE, pending ? EV_ADD : EV_DELETE, 0, client.serial_);
    client.writing_ = pending;
  }
}

void TailServer::close_client(int fd) {
  clients_.erase(fd);
  close(fd);
}

int main(int argc, char** argv) {
  std::string log;
  const kqlab::Address address = kqlab::parse_arguments(
      argc, argv, "tail -f for the network: every client gets every line appended to the log.", {},
      {{"--log", "FILE", "the file to follow (it must exist)", &log}});
  if (log.empty()) {
    std::fprintf(stderr, "%s: --log FILE is required: the file to follow\n", argv[0]);
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  const int listener = kqlab::open_listener(address);
  TailServer server(listener, log);
  kqlab::announce_listening(listener);
  server.run();
}
