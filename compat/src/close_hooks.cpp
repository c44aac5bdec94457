// close(), dup2(), dup3() and close_range() as seen by a program linked with the layer.
//
// Each wrapper tells the layer that a descriptor number is about to stop meaning what it meant (so its knotes
// vanish, as on BSD), then forwards to the next definition in the link order. Forwarding through
// dlsym(RTLD_NEXT) rather than a raw system call keeps the sanitizers' own interceptors in the chain. The next
// definitions are looked up once, before main; a wrapper called even earlier (by another constructor) falls back
// to the system call. No wrapper locks or allocates: close() may be called from a signal handler.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "fd_table.hpp"

namespace {

using CloseFn = int (*)(int);
using Dup2Fn = int (*)(int, int);
using Dup3Fn = int (*)(int, int, int);
using CloseRangeFn = int (*)(unsigned, unsigned, int);

CloseFn next_close;
Dup2Fn next_dup2;
Dup3Fn next_dup3;
CloseRangeFn next_close_range;

template <typename Fn>
Fn next_definition(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

__attribute__((constructor)) void find_next_definitions() {
  next_close = next_definition<CloseFn>("close");
  next_dup2 = next_definition<Dup2Fn>("dup2");
  next_dup3 = next_definition<Dup3Fn>("dup3");
  next_close_range = next_definition<CloseRangeFn>("close_range");
}

// dup2/dup3 replace `newfd` only when the call will succeed; forgetting it on a call that fails with EBADF
// (a bad oldfd) would drop knotes BSD keeps.
bool is_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

}  // namespace

extern "C" {

int close(int fd) {
  kqcompat::forget_descriptor(fd);
  return next_close ? next_close(fd) : static_cast<int>(syscall(SYS_close, fd));
}

int dup2(int oldfd, int newfd) {
  if (oldfd != newfd && is_open(oldfd)) kqcompat::forget_descriptor(newfd);
  return next_dup2 ? next_dup2(oldfd, newfd) : static_cast<int>(syscall(SYS_dup3, oldfd, newfd, 0));
}

int dup3(int oldfd, int newfd, int flags) {
  if (oldfd != newfd && is_open(oldfd)) kqcompat::forget_descriptor(newfd);
  return next_dup3 ? next_dup3(oldfd, newfd, flags) : static_cast<int>(syscall(SYS_dup3, oldfd, newfd, flags));
}

int close_range(unsigned first, unsigned last, int flags) {
  // CLOSE_RANGE_CLOEXEC only marks descriptors; nothing is closed yet.
  if (!(flags & CLOSE_RANGE_CLOEXEC)) {
    const unsigned end = last < (1u << 20) ? last : (1u << 20) - 1;
    for (unsigned fd = first; fd <= end && fd >= first; ++fd) kqcompat::forget_descriptor(static_cast<int>(fd));
  }
  return next_close_range ? next_close_range(first, last, flags)
                          : static_cast<int>(syscall(SYS_close_range, first, last, flags));
}

}  // extern "C"
