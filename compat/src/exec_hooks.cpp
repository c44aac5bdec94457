// The exec family and posix_spawn(), as seen by a program linked with the layer.
//
// execve(2) resets caught signals to SIG_DFL and keeps ignored ones ignored. While a knote watches a signal the
// program ignores, the kernel's disposition is the layer's handler, which exec would turn into SIG_DFL: the new
// program could then be killed by a signal its parent meant it to ignore (nohup's SIGHUP). Each wrapper puts
// SIG_IGN back in the kernel first (signals_before_exec) and the layer's handler back if the call returns.
//
// glibc's exec functions reach the kernel through its internal __execve, not through each other, so each is
// interposed; the list forms build their argv on the stack and go the same way. posix_spawn() runs its child in
// the parent's memory with the parent's dispositions at the time, so it gets the same treatment around the call
// (signals the program ignores are not counted while it runs). system() and popen() use glibc's internal spawn
// and are not covered: see compat/README.md. Nothing here allocates: exec usually runs in a child after fork.
#include <alloca.h>
#include <dlfcn.h>
#include <spawn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>

#include "signal_hooks.hpp"

namespace {

using ExecveFn = int (*)(const char*, char* const[], char* const[]);
using ExecvFn = int (*)(const char*, char* const[]);
using FexecveFn = int (*)(int, char* const[], char* const[]);
using SpawnFn = int (*)(pid_t*, const char*, const posix_spawn_file_actions_t*, const posix_spawnattr_t*,
                        char* const[], char* const[]);

ExecveFn next_execve, next_execvpe;
ExecvFn next_execv, next_execvp;
FexecveFn next_fexecve;
SpawnFn next_posix_spawn, next_posix_spawnp;

template <typename Fn>
void find(Fn& next, const char* name) {
  if (!next) next = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

// Before main, so that a child after fork never calls dlsym (not async-signal-safe).
__attribute__((constructor)) void find_next_definitions() {
  find(next_execve, "execve");
  find(next_execvpe, "execvpe");
  find(next_execv, "execv");
  find(next_execvp, "execvp");
  find(next_fexecve, "fexecve");
  find(next_posix_spawn, "posix_spawn");
  find(next_posix_spawnp, "posix_spawnp");
}

template <typename Fn, typename... Args>
int around_exec(Fn& next, const char* name, Args... args) {
  find(next, name);  // only when called before the constructor ran
  kqcompat::signals_before_exec();
  const int result = next(args...);
  const int error = errno;
  kqcompat::signals_after_exec_failed();
  errno = error;
  return result;
}

// execl's list as an argv on the stack (as glibc builds it), handed to `exec` with what follows the list's null
// (execle's environment).
template <typename Exec>
int with_argv(const char* first, va_list args, Exec exec) {
  va_list counting;
  va_copy(counting, args);
  size_t count = 1;
  while (va_arg(counting, char*)) ++count;
  va_end(counting);
  auto** argv = static_cast<char**>(alloca((count + 1) * sizeof(char*)));
  argv[0] = const_cast<char*>(first);
  for (size_t i = 1; i <= count; ++i) argv[i] = va_arg(args, char*);  // the last one is the null
  return exec(argv, args);
}

}  // namespace

extern "C" {

int execve(const char* path, char* const argv[], char* const envp[]) noexcept {
  return around_exec(next_execve, "execve", path, argv, envp);
}

int execv(const char* path, char* const argv[]) noexcept { return around_exec(next_execv, "execv", path, argv); }

int execvp(const char* file, char* const argv[]) noexcept { return around_exec(next_execvp, "execvp", file, argv); }

int execvpe(const char* file, char* const argv[], char* const envp[]) noexcept {
  return around_exec(next_execvpe, "execvpe", file, argv, envp);
}

int fexecve(int fd, char* const argv[], char* const envp[]) noexcept {
  return around_exec(next_fexecve, "fexecve", fd, argv, envp);
}

int execl(const char* path, const char* arg, ...) noexcept {
  va_list args;
  va_start(args, arg);
  const int result = with_argv(arg, args, [&](char** argv, va_list) { return execv(path, argv); });
  va_end(args);
  return result;
}

int execlp(const char* file, const char* arg, ...) noexcept {
  va_list args;
  va_start(args, arg);
  const int result = with_argv(arg, args, [&](char** argv, va_list) { return execvp(file, argv); });
  va_end(args);
  return result;
}

int execle(const char* path, const char* arg, ...) noexcept {
  va_list args;
  va_start(args, arg);
  const int result =
      with_argv(arg, args, [&](char** argv, va_list rest) { return execve(path, argv, va_arg(rest, char**)); });
  va_end(args);
  return result;
}

int posix_spawn(pid_t* pid, const char* path, const posix_spawn_file_actions_t* actions,
                const posix_spawnattr_t* attributes, char* const argv[], char* const envp[]) {
  return around_exec(next_posix_spawn, "posix_spawn", pid, path, actions, attributes, argv, envp);
}

int posix_spawnp(pid_t* pid, const char* file, const posix_spawn_file_actions_t* actions,
                 const posix_spawnattr_t* attributes, char* const argv[], char* const envp[]) {
  return around_exec(next_posix_spawnp, "posix_spawnp", pid, file, actions, attributes, argv, envp);
}

}  // extern "C"
