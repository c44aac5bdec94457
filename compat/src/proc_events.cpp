#include "proc_events.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "fd_table.hpp"

namespace kqcompat {
namespace {

// What travels up an end. Fork messages carry the fresh watcher side for the child (SCM_RIGHTS).
enum Kind : uint32_t { kFork = 1, kAbandoned = 2 };
struct Message {
  uint32_t kind;
  int32_t parent;
  int32_t child;
};

// The child sides this process reports through, one per ancestor (itself included) that listens. Read by the
// close wrapper without a lock.
constexpr int kMaxEnds = 4;
std::atomic<int> ends[kMaxEnds] = {-1, -1, -1, -1};

// One followed process: the watcher side of its end, and what arrived through it.
struct Entry {
  pid_t pid = 0;
  pid_t parent = 0;         // the process that reported its fork (0: this process's own entry)
  int fd = -1;
  uint32_t generation = 0;  // the number's close generation when taken: another means the program closed it
  int followers = 0;        // knotes following the process
  uint32_t forks = 0;
  bool ended = false;       // end of file: exec'd, exited, or abandoned
  bool exec = false;
  bool abandoned = false;
  std::string command;      // its name (comm) before any exec: a fork child's is its parent's
  std::vector<pid_t> children;
};

std::mutex registry_lock;
std::vector<Entry> registry;  // few: this process's followed and recently forked descendants
bool have_own_pair = false;   // this process's own entry and end (its children report to it)
pid_t forking_pid = 0;        // set by the prepare handler: the child reports it as its parent

// /proc/PID/stat's command name (field 2), state (3), ppid (4) and flags (9).
struct ProcessFacts {
  std::string command;
  char state = 0;
  pid_t parent = 0;
  unsigned long flags = 0;
};

// False when the process is gone (reaped).
bool process_facts(pid_t pid, ProcessFacts& facts) {
  char text[1024];
  const char* field = read_proc_stat(pid, text, sizeof text);
  const char* open_paren = field ? std::strchr(text, '(') : nullptr;
  if (!open_paren || field < open_paren) return false;
  facts.command.assign(open_paren + 1, field);
  int ppid = 0;
  if (std::sscanf(field + 1, " %c %d %*d %*d %*d %*d %lu", &facts.state, &ppid, &facts.flags) != 3) return false;
  facts.parent = ppid;
  return true;
}

std::string command_of(pid_t pid) {
  ProcessFacts facts;
  return process_facts(pid, facts) ? facts.command : std::string();
}

int make_pair(int sides[2]) { return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sides); }

// A descriptor the layer holds for NOTE_EXEC: the close wrapper must hear of it (fd_table.hpp).
uint32_t track_number(int fd) {
  fd_facts_create(fd);
  return fd_generation(fd);
}

bool add_end(int fd) {
  for (auto& slot : ends) {
    int empty = -1;
    if (slot.compare_exchange_strong(empty, fd)) return true;
  }
  return false;
}

void adopt(pid_t pid, pid_t parent, int fd, std::string command) {
  Entry entry;
  entry.pid = pid;
  entry.parent = parent;
  entry.command = std::move(command);
  entry.fd = fd;
  entry.generation = track_number(fd);
  registry.push_back(std::move(entry));
}

// Registry lock held. This process's own pair: the watcher side in the registry under its own pid, the child side
// among the ends its children will inherit.
void make_own_pair() {
  int sides[2];
  if (have_own_pair || make_pair(sides) != 0) return;
  track_number(sides[1]);
  if (!add_end(sides[1])) {
    ::close(sides[0]);
    ::close(sides[1]);
    return;
  }
  adopt(getpid(), 0, sides[0], command_of(getpid()));
  have_own_pair = true;
}

// At the end of file: an exec if the process is still there and not on its way out (exit closes descriptors
// before the process becomes a zombie, but after PF_EXITING is set), or if it has a new name: an exec followed at
// once by the exit, told by the zombie's name. (A program that execs itself and exits at once is taken for an
// exit; a process already reaped tells nothing.)
bool exec_not_exit(const Entry& entry) {
  constexpr unsigned long kExiting = 0x4;  // PF_EXITING, include/linux/sched.h
  ProcessFacts facts;
  if (!process_facts(entry.pid, facts)) return false;
  if (!entry.command.empty() && facts.command != entry.command) return true;
  return facts.state != 'Z' && facts.state != 'X' && !(facts.flags & kExiting);
}

bool lost(const Entry& entry) { return entry.fd < 0 || fd_generation(entry.fd) != entry.generation; }

void release(Entry& entry) {
  if (!lost(entry)) ::close(entry.fd);
  entry.fd = -1;
}

// Nothing more can arrive. The descriptor goes at once unless knotes have it in their epoll sets (they remove it
// when they stop following): a followed parent may fork many short-lived children.
void end(Entry& entry) {
  entry.ended = true;
  if (entry.pid == getpid() && entry.parent == 0) have_own_pair = false;  // the program closed our own end
  if (entry.followers == 0) release(entry);
}

// Reads what arrived for registry[index]. Children adopted on the way are appended (read by the caller's loop).
void pump(size_t index) {
  for (int budget = 0; budget < 256; ++budget) {
    Entry& entry = registry[index];
    if (entry.ended) return;
    if (lost(entry)) {  // the program closed the number: nothing more can be known
      entry.fd = -1;
      entry.abandoned = true;
      end(entry);
      return;
    }
    const int fd = entry.fd;
    Message message{};
    iovec part{&message, sizeof message};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr header{};
    header.msg_iov = &part;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = sizeof control;
    const ssize_t got = recvmsg(fd, &header, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (got < 0) return;  // EAGAIN: nothing more for now
    int passed = -1;
    for (cmsghdr* c = CMSG_FIRSTHDR(&header); c; c = CMSG_NXTHDR(&header, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) std::memcpy(&passed, CMSG_DATA(c), sizeof passed);
    if (got == 0) {
      entry.exec = !entry.abandoned && exec_not_exit(entry);
      end(entry);
      return;
    }
    if (got == sizeof message && message.kind == kFork) {
      ++entry.forks;
      entry.children.push_back(message.child);
      if (passed >= 0) adopt(message.child, entry.pid, passed, entry.command);  // moves registry: `entry` too
      continue;
    }
    if (got == sizeof message && message.kind == kAbandoned) entry.abandoned = true;
    if (passed >= 0) ::close(passed);
  }
}

bool followed(pid_t pid) {
  for (const Entry& entry : registry)
    if (entry.pid == pid && entry.followers > 0) return true;
  return false;
}

// Reads everything, then forgets what nobody follows and can tell nothing more. An ended child of a followed
// process is kept a while (the newest 256): NOTE_TRACK may yet follow it from its fork.
void pump_all() {
  for (size_t i = 0; i < registry.size(); ++i) pump(i);
  constexpr size_t kKeptEnded = 256;
  size_t kept = 0;
  for (size_t i = registry.size(); i-- > 0;) {
    Entry& entry = registry[i];
    if (entry.followers > 0 || !entry.ended) continue;
    release(entry);
    if (entry.parent != 0 && followed(entry.parent) && kept++ < kKeptEnded) continue;
    entry.pid = -1;  // marked for removal
  }
  std::erase_if(registry, [](const Entry& entry) { return entry.pid == -1; });
}

Entry* find(pid_t pid) {
  for (Entry& entry : registry)
    if (entry.pid == pid && !entry.ended) return &entry;
  for (Entry& entry : registry)
    if (entry.pid == pid) return &entry;
  return nullptr;
}

// A child forked a moment ago may not have run its fork hook yet: wait for its report on our own end.
Entry* wait_for_child(pid_t pid) {
  ProcessFacts facts;
  if (!have_own_pair || !process_facts(pid, facts) || facts.parent != getpid()) return nullptr;
  const Entry* own = find(getpid());
  if (!own || lost(*own)) return nullptr;
  const int own_fd = own->fd;
  for (int waited = 0; waited < 200; ++waited) {
    pollfd ready{own_fd, POLLIN, 0};
    poll(&ready, 1, 1);
    pump_all();
    if (Entry* entry = find(pid)) return entry;
  }
  return nullptr;
}

}  // namespace

int proc_events_follow(pid_t pid, bool since_fork, int* fd) {
  std::lock_guard guard(registry_lock);
  if (pid == getpid()) make_own_pair();
  pump_all();
  Entry* entry = find(pid);
  if (!entry) entry = wait_for_child(pid);
  if (!entry) return ENOTSUP;
  // An end closed by an exec (or abandoned) says nothing of the new program; one closed by the exit misses nothing.
  if ((entry->exec || entry->abandoned) && !since_fork) return ENOTSUP;
  ++entry->followers;
  *fd = entry->fd;
  return 0;
}

void proc_events_unfollow(pid_t pid) {
  std::lock_guard guard(registry_lock);
  for (Entry& entry : registry) {
    if (entry.pid == pid && entry.followers > 0) {
      --entry.followers;
      break;
    }
  }
  pump_all();
}

bool proc_events_news(pid_t pid, size_t children_seen, bool exited, ProcNews& news) {
  std::lock_guard guard(registry_lock);
  pump_all();
  const auto followed_entry = [pid]() -> const Entry* {
    for (const Entry& candidate : registry)
      if (candidate.pid == pid && candidate.followers > 0) return &candidate;
    return nullptr;
  };
  const Entry* entry = followed_entry();
  for (int waited = 0; exited && entry && !entry->ended && !lost(*entry) && waited < 50; ++waited) {
    pollfd ready{entry->fd, POLLIN | POLLRDHUP, 0};
    poll(&ready, 1, 1);
    pump_all();
    entry = followed_entry();
  }
  if (!entry) return false;
  news.forks = entry->forks;
  news.exec = entry->exec;
  news.children.assign(entry->children.begin() + static_cast<ptrdiff_t>(std::min(children_seen, entry->children.size())),
                       entry->children.end());
  return true;
}

void proc_events_descriptor_closing(int fd) {
  for (auto& slot : ends) {
    int expected = fd;
    if (slot.load(std::memory_order_relaxed) != fd || !slot.compare_exchange_strong(expected, -1)) continue;
    const Message message{kAbandoned, static_cast<int32_t>(syscall(SYS_getpid)), 0};
    syscall(SYS_sendto, fd, &message, sizeof message, MSG_DONTWAIT | MSG_NOSIGNAL, nullptr, 0);
  }
}

void proc_events_fork_prepare() {
  registry_lock.lock();
  pump_all();  // reports nobody asked for yet: children that exited are forgotten here, not left in the socket
  if (any_live_queue()) make_own_pair();
  forking_pid = getpid();
}

void proc_events_fork_parent() { registry_lock.unlock(); }

void proc_events_fork_child() {
  // The registry's descriptors are the parent's watcher sides: this child's copies go (raw closes: nothing of the
  // layer must hear of them).
  for (const Entry& entry : registry)
    if (!lost(entry)) syscall(SYS_close, entry.fd);
  registry.clear();
  have_own_pair = false;
  // Report the fork up every inherited end, each with a fresh watcher side for this child.
  const Message message{kFork, forking_pid, static_cast<int32_t>(getpid())};
  int fresh_ends[kMaxEnds];
  int kept = 0;
  for (auto& slot : ends) {
    const int inherited = slot.exchange(-1);
    if (inherited < 0) continue;
    int sides[2];
    if (make_pair(sides) == 0) {
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
      iovec part{const_cast<Message*>(&message), sizeof message};
      msghdr header{};
      header.msg_iov = &part;
      header.msg_iovlen = 1;
      header.msg_control = control;
      header.msg_controllen = sizeof control;
      cmsghdr* rights = CMSG_FIRSTHDR(&header);
      rights->cmsg_level = SOL_SOCKET;
      rights->cmsg_type = SCM_RIGHTS;
      rights->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(rights), &sides[0], sizeof(int));
      const bool sent = syscall(SYS_sendmsg, inherited, &header, MSG_DONTWAIT | MSG_NOSIGNAL) == sizeof message;
      syscall(SYS_close, sides[0]);
      if (sent)
        fresh_ends[kept++] = sides[1];
      else
        syscall(SYS_close, sides[1]);
    }
    syscall(SYS_close, inherited);
  }
  for (int i = 0; i < kept; ++i) {
    track_number(fresh_ends[i]);
    ends[i].store(fresh_ends[i]);
  }
  registry_lock.unlock();
}

const char* read_proc_stat(pid_t pid, char* text, size_t size) {
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  const ssize_t got = read(fd, text, size - 1);
  ::close(fd);
  if (got <= 0) return nullptr;
  text[got] = '\0';
  return std::strrchr(text, ')');
}

}  // namespace kqcompat
