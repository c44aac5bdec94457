// EVFILT_READ and EVFILT_WRITE on regular files, which epoll refuses (EPERM).
//
// FreeBSD (kqueue(2), vfs_subr.c's filt_vfsread/filt_vfswrite): a read knote is active while the file offset is
// not at the end, `data` = size - offset (negative past the end), and wakes again when the file changes; with
// NOTE_FILE_POLL it is always active. A write knote is always active with `data` = 0.
//
// Here a queue learns that a watched file changed from one inotify instance (made on first use, so a queue that
// watches no file costs nothing), with one IN_MODIFY watch per file shared by all the descriptors of that file
// the queue watches. Per-user inotify limits are small (fs.inotify.max_user_instances, 128 by default): one
// instance per knote would run out, one per queue does not in practice. Between changes nothing polls: a level
// knote is re-queued after each delivery (BSD re-queues it too) and drops off once the offset reaches the end.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "kqueue.hpp"

namespace kqcompat {

class FileWatch {
 public:
  // The queue's inotify source, made on first use. Null, with `*error` set to an errno, when it cannot be made.
  static FileWatch* of(Kqueue& queue, int* error);
  ~FileWatch();
  FileWatch(const FileWatch&) = delete;
  FileWatch& operator=(const FileWatch&) = delete;

  // Starts watching `record`'s file (nothing to do if it is watched already). Returns 0 or an errno.
  int watch(WatchedFd& record);
  // Stops watching `record`; the inotify watch goes with the last record of its file.
  void unwatch(WatchedFd& record);
  // Closes the inotify instance before the queue's knotes are detached, so that detaching makes no
  // inotify_rm_watch: in a fork child the instance is the parent's too, and a removed watch would be its loss.
  void close_instance();

 private:
  explicit FileWatch(int fd);
  // Files changed: queue the enabled knotes of every descriptor of those files for a fresh look.
  static void on_ready(Kqueue& queue, InternalSource& source);
  void drain(Kqueue& queue);
  void queue_record(Kqueue& queue, WatchedFd& record);

  InternalSource source_;
  std::unordered_map<int, std::vector<WatchedFd*>> records_;  // by inotify watch descriptor
};

// What fd_filter.cpp calls for a regular file's knote in place of the epoll plumbing.
// Hooks `knote` (already in its record's slot) up to the queue's FileWatch and queues a first look, as FreeBSD
// evaluates a knote as soon as it is registered. Returns 0 or an errno, with nothing left watched.
int file_attach(Kqueue& queue, Knote& knote);
// After `knote` left its record's slot: stops watching once the record has no knote left.
void file_detach(Kqueue& queue, WatchedFd& record);
// Bytes between the descriptor's offset and the end of the file (negative past the end). Marks the record lost
// when the number was closed behind the layer's back.
int64_t file_unread_bytes(WatchedFd& record);

}  // namespace kqcompat
