#include "file_watch.hpp"

#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace kqcompat {

FileWatch* FileWatch::of(Kqueue& queue, int* error) {
  if (queue.files_) return queue.files_.get();
  const int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) {
    *error = errno;
    return nullptr;
  }
  std::unique_ptr<FileWatch> files(new FileWatch(fd));
  if (const int failed = queue.add_source(files->source_)) {
    *error = failed;
    return nullptr;  // the destructor closes the inotify descriptor
  }
  queue.files_ = std::move(files);
  return queue.files_.get();
}

FileWatch::FileWatch(int fd) {
  source_.fd_ = fd;
  source_.on_ready = on_ready;
}

// Closing the instance removes its watches.
FileWatch::~FileWatch() { close_instance(); }

void FileWatch::close_instance() {
  if (source_.fd_ >= 0) ::close(source_.fd_);
  source_.fd_ = -1;
}

int FileWatch::watch(WatchedFd& record) {
  if (record.watch_ >= 0) return 0;
  // inotify wants a path; /proc/self/fd/N leads to the open file itself, even one that was renamed or unlinked.
  char path[40];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", record.fd());
  const int watch = inotify_add_watch(source_.fd_, path, IN_MODIFY);
  if (watch < 0) return errno;
  record.watch_ = watch;
  records_[watch].push_back(&record);  // the same file through another descriptor shares the watch
  return 0;
}

void FileWatch::unwatch(WatchedFd& record) {
  if (record.watch_ < 0) return;
  auto it = records_.find(record.watch_);
  if (it != records_.end()) {
    std::erase(it->second, &record);
    if (it->second.empty()) {
      if (source_.fd_ >= 0) inotify_rm_watch(source_.fd_, record.watch_);
      records_.erase(it);
    }
  }
  record.watch_ = -1;
}

void FileWatch::on_ready(Kqueue& queue, InternalSource&) { queue.files_->drain(queue); }

void FileWatch::drain(Kqueue& queue) {
  alignas(inotify_event) char buffer[4096];
  for (;;) {
    const ssize_t got = read(source_.fd_, buffer, sizeof buffer);
    if (got <= 0) return;  // EAGAIN: drained
    for (ssize_t at = 0; at < got;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
      at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      if (event->mask & IN_Q_OVERFLOW) {
        // Events were lost: look at every watched file.
        for (auto& [watch, records] : records_)
          for (WatchedFd* record : records) queue_record(queue, *record);
        continue;
      }
      auto it = records_.find(event->wd);
      if (it == records_.end()) continue;  // IN_IGNORED after unwatch, or a file no longer watched
      for (WatchedFd* record : it->second) queue_record(queue, *record);
    }
  }
}

void FileWatch::queue_record(Kqueue& queue, WatchedFd& record) {
  for (Knote* knote : {record.read(), record.write()}) {
    if (knote && !knote->disabled_) queue.queue_pending(*knote);
  }
}

int file_attach(Kqueue& queue, Knote& knote) {
  int error = 0;
  FileWatch* files = FileWatch::of(queue, &error);
  if (!files) return error;
  if ((error = files->watch(record_of(knote)))) return error;
  if (!knote.disabled_) queue.queue_pending(knote);
  return 0;
}

void file_detach(Kqueue& queue, WatchedFd& record) {
  if (!record.has_knotes() && queue.files_) queue.files_->unwatch(record);
}

int64_t file_unread_bytes(WatchedFd& record) {
  struct stat info;
  const off_t offset = lseek(record.fd(), 0, SEEK_CUR);
  if (offset < 0 || fstat(record.fd(), &info) != 0) {
    if (errno == EBADF) record.lost_ = true;
    return 0;
  }
  return static_cast<int64_t>(info.st_size) - offset;
}

}  // namespace kqcompat
