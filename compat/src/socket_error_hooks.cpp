// getsockopt() and the read and write calls, as seen by a program linked with the layer: they hand back the
// socket errors the layer took from the kernel to fill `fflags` (socket_errors.hpp).
//
// FreeBSD keeps a socket's error (so_error) until one of three things clears it, and each gets it:
// getsockopt(SO_ERROR) returns it; soreceive() returns it once no data is left to read (instead of end of file
// or EWOULDBLOCK; MSG_PEEK leaves it); sosend() returns it while the socket can still send (a datagram socket
// after an ICMP error, say). Once a connection is down (a reset, a refused connect: SBS_CANTSENDMORE), sosend()
// fails with EPIPE first, raising SIGPIPE, and leaves the error; Linux's write does the same then. The wrappers
// below do this with the error the layer kept, then forward to the next definition in the link order
// (dlsym(RTLD_NEXT), which keeps the sanitizers' interceptors in the chain), as the close wrappers do. Until the
// layer has kept an error, each wrapper costs one relaxed load. Nothing here locks or allocates, and errno is
// changed only to report the error.
//
// Not covered (compat/README.md): recvmmsg/sendmmsg, sendfile/splice, and glibc's internal reads (a socket
// wrapped in a FILE*), which reach the kernel without these symbols.
#include <dlfcn.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include "socket_errors.hpp"

namespace {

using kqcompat::socket_errors_kept;

using ReadFn = ssize_t (*)(int, void*, size_t);
using WriteFn = ssize_t (*)(int, const void*, size_t);
using ReadvFn = ssize_t (*)(int, const iovec*, int);
using RecvFn = ssize_t (*)(int, void*, size_t, int);
using SendFn = ssize_t (*)(int, const void*, size_t, int);
using RecvfromFn = ssize_t (*)(int, void*, size_t, int, sockaddr*, socklen_t*);
using SendtoFn = ssize_t (*)(int, const void*, size_t, int, const sockaddr*, socklen_t);
using RecvmsgFn = ssize_t (*)(int, msghdr*, int);
using SendmsgFn = ssize_t (*)(int, const msghdr*, int);
using ReadChkFn = ssize_t (*)(int, void*, size_t, size_t);
using RecvChkFn = ssize_t (*)(int, void*, size_t, size_t, int);
using RecvfromChkFn = ssize_t (*)(int, void*, size_t, size_t, int, sockaddr*, socklen_t*);
using GetsockoptFn = int (*)(int, int, int, void*, socklen_t*);

// Calls the next definition of `name`, looked up once (before main, by the constructor below; a call made even
// earlier looks it up itself). Every read and write pays for this: a load, a test and a jump.
template <typename Fn>
Fn look_up(Fn& cached, const char* name) {
  cached = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
  return cached;
}

template <typename Fn, typename... Args>
[[gnu::noinline, gnu::cold]] auto look_up_and_call(Fn& cached, const char* name, Args... args) {
  return look_up(cached, name)(args...);
}

template <typename Fn, typename... Args>
inline auto forward(Fn& cached, const char* name, Args... args) {
  const Fn found = cached;
  if (__builtin_expect(found != nullptr, 1)) return found(args...);
  return look_up_and_call(cached, name, args...);
}

ReadFn next_read;
WriteFn next_write;
ReadvFn next_readv, next_writev;
RecvFn next_recv;
SendFn next_send;
RecvfromFn next_recvfrom;
SendtoFn next_sendto;
RecvmsgFn next_recvmsg;
SendmsgFn next_sendmsg;
ReadChkFn next_read_chk;
RecvChkFn next_recv_chk;
RecvfromChkFn next_recvfrom_chk;
GetsockoptFn next_getsockopt_fn;

__attribute__((constructor)) void find_next_definitions() {
  look_up(next_read, "read");
  look_up(next_write, "write");
  look_up(next_readv, "readv");
  look_up(next_writev, "writev");
  look_up(next_recv, "recv");
  look_up(next_send, "send");
  look_up(next_recvfrom, "recvfrom");
  look_up(next_sendto, "sendto");
  look_up(next_recvmsg, "recvmsg");
  look_up(next_sendmsg, "sendmsg");
  look_up(next_read_chk, "__read_chk");
  look_up(next_recv_chk, "__recv_chk");
  look_up(next_recvfrom_chk, "__recvfrom_chk");
  look_up(next_getsockopt_fn, "getsockopt");
}

// A read on a socket with a kept error: what is still queued first, then the error instead of end of file or
// EWOULDBLOCK (a blocking read does not block: FreeBSD returns the error at once).
template <typename Read>
ssize_t read_side(int fd, bool peek, Read read) {
  const int error = kqcompat::kept_socket_error(fd);
  if (error == 0) return read();
  const int saved_errno = errno;
  pollfd probe{fd, POLLIN, 0};
  if (poll(&probe, 1, 0) == 1 && (probe.revents & POLLIN)) {
    const ssize_t got = read();
    if (got > 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return got;
  }
  const int taken = peek ? error : kqcompat::take_socket_error(fd);
  if (taken == 0) {  // another thread took it meanwhile
    errno = saved_errno;
    return read();
  }
  errno = taken;
  return -1;
}

// A write on a socket with a kept error fails with it, once, while the socket can still send; on a connection
// that is down (hung up) the kernel's own EPIPE and SIGPIPE are FreeBSD's answer too, and the error stays.
template <typename Write>
ssize_t write_side(int fd, Write write) {
  if (kqcompat::kept_socket_error(fd) == 0) return write();
  pollfd probe{fd, POLLOUT, 0};
  if (poll(&probe, 1, 0) == 1 && (probe.revents & POLLHUP)) return write();
  if (const int taken = kqcompat::take_socket_error(fd)) {
    errno = taken;
    return -1;
  }
  return write();
}

// The slow paths, out of line so that the wrappers' common case is a load, a test and a jump to the next
// definition. `peek`: MSG_PEEK, which leaves the error in place.
template <typename Fn, typename... Args>
[[gnu::noinline, gnu::cold]] ssize_t read_kept(Fn& cached, const char* name, bool peek, int fd, Args... args) {
  return read_side(fd, peek, [&] { return forward(cached, name, fd, args...); });
}

template <typename Fn, typename... Args>
[[gnu::noinline, gnu::cold]] ssize_t write_kept(Fn& cached, const char* name, int fd, Args... args) {
  return write_side(fd, [&] { return forward(cached, name, fd, args...); });
}

}  // namespace

namespace kqcompat {

int next_getsockopt(int fd, int level, int name, void* value, socklen_t* size) {
  return forward(next_getsockopt_fn, "getsockopt", fd, level, name, value, size);
}

}  // namespace kqcompat

extern "C" {

int getsockopt(int fd, int level, int name, void* value, socklen_t* size) {
  const int result = kqcompat::next_getsockopt(fd, level, name, value, size);
  if (result != 0 || level != SOL_SOCKET || name != SO_ERROR || !socket_errors_kept()) return result;
  // The kernel's error, if it has a newer one, replaces the kept one (FreeBSD has one so_error); else the kept one.
  const int kept = kqcompat::take_socket_error(fd);
  if (kept != 0 && value && size && *size >= sizeof(int) && *static_cast<int*>(value) == 0)
    *static_cast<int*>(value) = kept;
  return result;
}

ssize_t read(int fd, void* buffer, size_t size) {
  if (socket_errors_kept()) [[unlikely]] return read_kept(next_read, "read", false, fd, buffer, size);
  return forward(next_read, "read", fd, buffer, size);
}

ssize_t readv(int fd, const iovec* parts, int count) {
  if (socket_errors_kept()) [[unlikely]] return read_kept(next_readv, "readv", false, fd, parts, count);
  return forward(next_readv, "readv", fd, parts, count);
}

ssize_t recv(int fd, void* buffer, size_t size, int flags) {
  if (socket_errors_kept()) [[unlikely]] return read_kept(next_recv, "recv", flags & MSG_PEEK, fd, buffer, size, flags);
  return forward(next_recv, "recv", fd, buffer, size, flags);
}

ssize_t recvfrom(int fd, void* buffer, size_t size, int flags, sockaddr* from, socklen_t* from_size) {
  if (socket_errors_kept()) [[unlikely]]
    return read_kept(next_recvfrom, "recvfrom", flags & MSG_PEEK, fd, buffer, size, flags, from, from_size);
  return forward(next_recvfrom, "recvfrom", fd, buffer, size, flags, from, from_size);
}

ssize_t recvmsg(int fd, msghdr* message, int flags) {
  if (socket_errors_kept()) [[unlikely]] return read_kept(next_recvmsg, "recvmsg", flags & MSG_PEEK, fd, message, flags);
  return forward(next_recvmsg, "recvmsg", fd, message, flags);
}

// _FORTIFY_SOURCE's checked forms, which glibc's headers call instead of read/recv/recvfrom.
ssize_t __read_chk(int fd, void* buffer, size_t size, size_t room) {
  if (socket_errors_kept()) [[unlikely]] return read_kept(next_read_chk, "__read_chk", false, fd, buffer, size, room);
  return forward(next_read_chk, "__read_chk", fd, buffer, size, room);
}

ssize_t __recv_chk(int fd, void* buffer, size_t size, size_t room, int flags) {
  if (socket_errors_kept()) [[unlikely]]
    return read_kept(next_recv_chk, "__recv_chk", flags & MSG_PEEK, fd, buffer, size, room, flags);
  return forward(next_recv_chk, "__recv_chk", fd, buffer, size, room, flags);
}

ssize_t __recvfrom_chk(int fd, void* buffer, size_t size, size_t room, int flags, sockaddr* from,
                       socklen_t* from_size) {
  if (socket_errors_kept()) [[unlikely]]
    return read_kept(next_recvfrom_chk, "__recvfrom_chk", flags & MSG_PEEK, fd, buffer, size, room, flags, from,
                     from_size);
  return forward(next_recvfrom_chk, "__recvfrom_chk", fd, buffer, size, room, flags, from, from_size);
}

ssize_t write(int fd, const void* buffer, size_t size) {
  if (socket_errors_kept()) [[unlikely]] return write_kept(next_write, "write", fd, buffer, size);
  return forward(next_write, "write", fd, buffer, size);
}

ssize_t writev(int fd, const iovec* parts, int count) {
  if (socket_errors_kept()) [[unlikely]] return write_kept(next_writev, "writev", fd, parts, count);
  return forward(next_writev, "writev", fd, parts, count);
}

ssize_t send(int fd, const void* buffer, size_t size, int flags) {
  if (socket_errors_kept()) [[unlikely]] return write_kept(next_send, "send", fd, buffer, size, flags);
  return forward(next_send, "send", fd, buffer, size, flags);
}

ssize_t sendto(int fd, const void* buffer, size_t size, int flags, const sockaddr* to, socklen_t to_size) {
  if (socket_errors_kept()) [[unlikely]] return write_kept(next_sendto, "sendto", fd, buffer, size, flags, to, to_size);
  return forward(next_sendto, "sendto", fd, buffer, size, flags, to, to_size);
}

ssize_t sendmsg(int fd, const msghdr* message, int flags) {
  if (socket_errors_kept()) [[unlikely]] return write_kept(next_sendmsg, "sendmsg", fd, message, flags);
  return forward(next_sendmsg, "sendmsg", fd, message, flags);
}

}  // extern "C"
