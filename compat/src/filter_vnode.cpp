// EVFILT_VNODE: changes to the file or directory a descriptor refers to.
//
// kqueue(2): "Takes a file descriptor as the identifier and the events to watch for in fflags, and returns when
// one or more of the requested events occurs on the descriptor." FreeBSD posts a hint per vnode operation
// (vfs_subr.c, vop_*_post) and filt_vfsvnode adds the whole hint to the knote's fflags when it shares a bit with
// the interest. The hints: write → NOTE_WRITE, | NOTE_EXTEND if the file grew; setattr → NOTE_ATTRIB; link →
// NOTE_LINK on the file, NOTE_WRITE on the directory; remove → NOTE_DELETE on the file (for every name removed),
// NOTE_WRITE on the directory; rename → NOTE_RENAME on the file, NOTE_DELETE on a file it replaced, NOTE_WRITE on
// the directories (| NOTE_EXTEND across directories, | NOTE_LINK when a directory moved); mkdir and rmdir →
// NOTE_WRITE | NOTE_LINK on the parent, NOTE_DELETE on the removed directory; unmount → NOTE_REVOKE and EV_EOF.
//
// Linux: one inotify instance per queue (the per-user limit on instances is small), in the queue's epoll set, and
// one watch per inode, shared by the knotes on it. A watch is added through /proc/self/fd/N, which resolves to
// the descriptor's own file whatever its name is now. Inotify names the operation but not every hint bit, so
// fstat() fills in: the link count (unlinking an open file sends only IN_ATTRIB: a drop is NOTE_DELETE, a rise
// NOTE_LINK) and the size (NOTE_EXTEND). rmdir of an open directory sends nothing to the directory itself, only
// IN_DELETE to its parent, so a directory knote also watches its parent.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <unordered_map>
#include <vector>

#include "fd_table.hpp"
#include "kqueue.hpp"

namespace kqcompat {
namespace {

constexpr uint32_t kWatchMask =
    IN_MODIFY | IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO;
constexpr uint32_t kEntryChanged = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO;

struct VnodeKnote : FilterState {
  int wd = -1;         // the watch on the file itself
  int parent_wd = -1;  // a directory's watch on its parent
  bool directory = false;
  struct stat last {};  // link count, size and owner/mode as last seen
};

struct Watch {
  std::vector<Knote*> own;       // knotes on this inode
  std::vector<Knote*> children;  // directory knotes whose parent this is
};

struct VnodeQueue : FilterState {
  InternalSource source;  // the inotify instance
  std::unordered_map<int, Watch> watches;
  ~VnodeQueue() override { ::close(source.fd_); }
};

VnodeKnote& state_of(Knote& knote) { return static_cast<VnodeKnote&>(*source_knote(knote).state_); }
VnodeQueue& queue_state(Kqueue& queue) { return static_cast<VnodeQueue&>(*queue.filter_state(EVFILT_VNODE)); }
int fd_of(const Knote& knote) { return static_cast<int>(knote.ident_); }

// Watches the file open as `fd`, or (with `name` "..") its parent directory. Returns the watch, or -1 and errno.
int watch(VnodeQueue& vq, int fd, const char* name = nullptr) {
  int target = fd;
  if (name) target = openat(fd, name, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (target < 0) return -1;
  char path[32];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", target);
  const int wd = inotify_add_watch(vq.source.fd_, path, kWatchMask);
  if (target != fd) ::close(target);
  return wd;
}

void forget(Kqueue& queue, VnodeQueue& vq, int wd, std::vector<Knote*> Watch::*list, Knote& knote) {
  const auto it = vq.watches.find(wd);
  if (it == vq.watches.end()) return;
  std::erase(it->second.*list, &knote);
  if (!it->second.own.empty() || !it->second.children.empty()) return;
  if (!queue.closed_.load()) inotify_rm_watch(vq.source.fd_, wd);  // never in a fork child: the parent's instance
  vq.watches.erase(it);
}

void watch_parent(VnodeQueue& vq, Knote& knote) {
  VnodeKnote& state = state_of(knote);
  state.parent_wd = watch(vq, fd_of(knote), "..");  // none for "/" or an unreadable parent: rmdir goes unseen
  if (state.parent_wd >= 0) vq.watches[state.parent_wd].children.push_back(&knote);
}

// FreeBSD's filt_vfsvnode: the whole hint joins fflags when it shares a bit with the interest.
void note(Kqueue& queue, Knote& knote, unsigned int hint) {
  if (!(knote.sfflags_ & hint)) return;
  source_knote(knote).fired_fflags_ |= hint;
  if (!knote.disabled_) queue.queue_pending(knote);
}

// One inotify event on the knote's own file. `moved_elsewhere`: a rename into or out of this directory whose other
// half is not in the same directory.
void on_own_event(Kqueue& queue, VnodeQueue& vq, Knote& knote, uint32_t mask, bool moved_elsewhere) {
  VnodeKnote& state = state_of(knote);
  struct stat now = state.last;
  fstat(fd_of(knote), &now);
  const struct stat& was = state.last;
  if (mask & IN_MODIFY) note(queue, knote, NOTE_WRITE | (now.st_size > was.st_size ? NOTE_EXTEND : 0));
  if (mask & IN_ATTRIB) {
    const bool gone = state.directory ? now.st_nlink == 0 : now.st_nlink < was.st_nlink;
    if (gone) note(queue, knote, NOTE_DELETE);
    if (!gone && now.st_nlink != was.st_nlink) note(queue, knote, NOTE_LINK);
    if (now.st_nlink == was.st_nlink || now.st_mode != was.st_mode || now.st_uid != was.st_uid ||
        now.st_gid != was.st_gid)
      note(queue, knote, NOTE_ATTRIB);
  }
  if (mask & kEntryChanged) {
    unsigned int hint = NOTE_WRITE;
    if (now.st_nlink != was.st_nlink) hint |= NOTE_LINK;  // a subdirectory came or went
    if (moved_elsewhere) hint |= NOTE_EXTEND;
    note(queue, knote, hint);
  }
  if (mask & IN_DELETE_SELF) note(queue, knote, NOTE_DELETE);
  if (mask & IN_UNMOUNT) note(queue, knote, NOTE_REVOKE);
  if (mask & IN_MOVE_SELF) {
    note(queue, knote, NOTE_RENAME);
    if (state.directory) {  // it may have a new parent now
      forget(queue, vq, state.parent_wd, &Watch::children, knote);
      watch_parent(vq, knote);
    }
  }
  state.last = now;
}

// A subdirectory left or was replaced in a watched knote's parent: was it the knote's directory (rmdir)?
void on_parent_event(Kqueue& queue, Knote& knote) {
  struct stat now;
  if (fstat(fd_of(knote), &now) == 0 && now.st_nlink == 0) note(queue, knote, NOTE_DELETE);
}

bool closed_since(const Knote& knote) { return source_knote(knote).fd_generation_ != fd_generation(fd_of(knote)); }

void on_event(Kqueue& queue, VnodeQueue& vq, const inotify_event& event, bool moved_elsewhere,
              std::vector<Knote*>& closed) {
  const auto it = vq.watches.find(event.wd);
  if (it == vq.watches.end()) return;
  if (event.mask & IN_IGNORED) {  // the watch is gone (the inode was freed, or unmounted)
    for (Knote* knote : it->second.own) state_of(*knote).wd = -1;
    for (Knote* knote : it->second.children) state_of(*knote).parent_wd = -1;
    vq.watches.erase(it);
    return;
  }
  const auto own = it->second.own;  // copies: handling an event may re-watch a parent, changing the map
  const auto children = it->second.children;
  // An event with a name is about an entry of the watched directory (inotify(7)). Its coming and going changes the
  // directory; the entry's own changes (IN_MODIFY, IN_ATTRIB of a file in it) do not, as on BSD.
  const uint32_t mask = event.len > 0 ? event.mask & kEntryChanged : event.mask;
  for (Knote* knote : own) {
    if (closed_since(*knote))
      closed.push_back(knote);
    else if (mask != 0)
      on_own_event(queue, vq, *knote, mask, moved_elsewhere);
  }
  if (!(event.mask & IN_ISDIR) || !(event.mask & (IN_DELETE | IN_MOVED_TO))) return;
  for (Knote* knote : children) {
    if (closed_since(*knote))
      closed.push_back(knote);
    else
      on_parent_event(queue, *knote);
  }
}

// Inotify lost events (IN_Q_OVERFLOW): compare every file with what was last seen.
void on_overflow(Kqueue& queue, VnodeQueue& vq) {
  std::vector<Knote*> all;
  for (auto& [wd, watch] : vq.watches) all.insert(all.end(), watch.own.begin(), watch.own.end());
  for (Knote* knote : all) {
    struct stat now;
    if (closed_since(*knote) || fstat(fd_of(*knote), &now) != 0) continue;
    on_own_event(queue, vq, *knote, IN_ATTRIB | (now.st_size != state_of(*knote).last.st_size ? IN_MODIFY : 0), false);
  }
}

// Reads every event inotify holds. Knotes found closed are dropped when `drop_closed`; not during a delivery,
// where the knote being delivered could be one of them (the core drops those before delivering).
void drain(Kqueue& queue, bool drop_closed) {
  VnodeQueue& vq = queue_state(queue);
  std::vector<Knote*> closed;
  alignas(inotify_event) char buffer[4096];
  ssize_t size;
  while ((size = read(vq.source.fd_, buffer, sizeof buffer)) > 0) {
    std::vector<const inotify_event*> events;
    for (ssize_t at = 0; at < size;) {
      events.push_back(reinterpret_cast<const inotify_event*>(buffer + at));
      at += static_cast<ssize_t>(sizeof(inotify_event) + events.back()->len);
    }
    for (size_t i = 0; i < events.size(); ++i) {
      const inotify_event& event = *events[i];
      if (event.mask & IN_Q_OVERFLOW) {
        on_overflow(queue, vq);
        continue;
      }
      // The two halves of a rename come one after the other, with one cookie (inotify(7)).
      const inotify_event* partner = nullptr;
      if ((event.mask & IN_MOVED_FROM) && i + 1 < events.size()) partner = events[i + 1];
      if ((event.mask & IN_MOVED_TO) && i > 0) partner = events[i - 1];
      const bool same_directory = partner && partner->cookie == event.cookie && partner->wd == event.wd;
      on_event(queue, vq, event, !same_directory, closed);
    }
  }
  // Knotes whose descriptor was closed: BSD removed them at close(); they go now.
  if (!drop_closed) return;
  std::sort(closed.begin(), closed.end());
  closed.erase(std::unique(closed.begin(), closed.end()), closed.end());
  for (Knote* knote : closed) queue.drop_knote(*knote);
}

void inotify_ready(Kqueue& queue, InternalSource&) { drain(queue, true); }

int make_queue_state(Kqueue& queue) {
  auto& slot = queue.filter_state(EVFILT_VNODE);
  if (slot) return 0;
  auto fresh = std::make_unique<VnodeQueue>();
  fresh->source.fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fresh->source.fd_ < 0) return errno;  // EMFILE: the per-user instance limit
  fresh->source.on_ready = inotify_ready;
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = epoll_data_for(fresh->source);
  if (epoll_ctl(queue.epoll_fd_, EPOLL_CTL_ADD, fresh->source.fd_, &event) != 0) return errno;
  slot = std::move(fresh);
  return 0;
}

int attach(Kqueue& queue, Knote& knote) {
  if (knote.ident_ > INT_MAX) return EBADF;
  auto state = std::make_unique<VnodeKnote>();
  if (fstat(fd_of(knote), &state->last) != 0) return errno;
  // Pipes, sockets and devices have no vnode events (FreeBSD: their fileops refuse the filter).
  if (!S_ISREG(state->last.st_mode) && !S_ISDIR(state->last.st_mode)) return EINVAL;
  if (const int error = make_queue_state(queue)) return error;
  VnodeQueue& vq = queue_state(queue);
  state->directory = S_ISDIR(state->last.st_mode);
  state->wd = watch(vq, fd_of(knote));
  if (state->wd < 0) return errno;  // ENOSPC: the per-user watch limit
  vq.watches[state->wd].own.push_back(&knote);
  source_knote(knote).state_ = std::move(state);
  if (state_of(knote).directory) watch_parent(vq, knote);
  return 0;
}

int modify(Kqueue&, Knote& knote, const struct kevent& change) {
  knote.sfflags_ = change.fflags;  // FreeBSD replaces the interest on every change
  knote.sdata_ = change.data;
  return 0;
}

// The core looks again on enable: changes made while disabled surface then, as on BSD.
bool enable_changed(Kqueue&, Knote&) { return false; }

void detach(Kqueue& queue, Knote& knote) {
  VnodeQueue& vq = queue_state(queue);
  forget(queue, vq, state_of(knote).wd, &Watch::own, knote);
  forget(queue, vq, state_of(knote).parent_wd, &Watch::children, knote);
}

// BSD posts a vnode event during the operation itself; inotify's may still be queued. Reading them first makes
// the event carry everything that happened before this kevent() call.
bool evaluate(Kqueue& queue, Knote& knote, uint32_t, struct kevent& out) {
  drain(queue, false);
  if (source_knote(knote).fired_fflags_ == 0) return false;
  out.fflags = source_knote(knote).fired_fflags_;
  if (source_knote(knote).fired_fflags_ & NOTE_REVOKE) out.flags |= EV_EOF;
  return true;
}

void clear(Knote& knote) { source_knote(knote).fired_fflags_ = 0; }

bool source_is_level(const Knote&) { return false; }

}  // namespace

const FilterOps vnode_filter = {
    .attach = attach,
    .modify = modify,
    .enable_changed = enable_changed,
    .detach = detach,
    .evaluate = evaluate,
    .clear = clear,
    .source_is_level = source_is_level,
};

}  // namespace kqcompat
