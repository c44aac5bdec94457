// The socket errors the layer took from the kernel, kept for the program.
//
// FreeBSD's kevent() reports a socket's pending error (so_error) in `fflags` without clearing it: the program
// still finds it with getsockopt(SO_ERROR), the standard check after a non-blocking connect(), and its next
// read() or write() fails with it. Linux has one way to learn the error, getsockopt(SO_ERROR), and reading it
// clears it. So the layer remembers what it read, per descriptor number, and answers the program with it:
// socket_error_hooks.cpp interposes getsockopt() and the read and write calls. The error is given once, as
// FreeBSD gives so_error once (getsockopt, a failed read or write clears it), and forgotten when the number is
// closed.
//
// Everything here is lock-free and async-signal-safe except keep_socket_error (kevent() only), which may make a
// chunk of the table. Chunks are never freed.
#pragma once

#include <sys/socket.h>

#include <atomic>

namespace kqcompat {

namespace socket_error_tables {
// True once any error was ever kept: until then every interposed call costs this one load.
extern std::atomic<bool> any_kept;
}  // namespace socket_error_tables

inline bool socket_errors_kept() { return socket_error_tables::any_kept.load(std::memory_order_relaxed); }

// The socket's pending error as the kernel has it, read (and so cleared) past the interposed getsockopt and
// kept for the program; when the kernel has none, the one kept earlier. 0: none.
unsigned int socket_error_for_event(int fd);

// The error kept for `fd` (0: none), left in place, or taken (left 0).
int kept_socket_error(int fd);
int take_socket_error(int fd);

// The number is being closed or replaced: its error goes with it.
void forget_socket_error(int fd);

// getsockopt() as the next definition in the link order has it (the kernel's, through any sanitizer).
int next_getsockopt(int fd, int level, int name, void* value, socklen_t* size);

}  // namespace kqcompat
