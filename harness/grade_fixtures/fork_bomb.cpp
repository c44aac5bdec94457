// A grade fixture (harness/test_grade.py): a server that forks without end. It starts like any lesson server,
// then every process forks in a loop, forever, ignoring failures: the grader's process limit must contain it and
// its watchdog stop the run.
//
// A safety belt for the machine it is tested on: it forks only under a process limit (RLIMIT_NPROC) of at most
// 4096, as `./kqlab grade` sets one; run by hand without such a limit, it just waits.
#include <sys/resource.h>
#include <unistd.h>

#include "setup.hpp"

int main(int argc, char** argv) {
  const kqlab::Address address = kqlab::parse_arguments(argc, argv, "A server that forks without end.");
  const int listener = kqlab::open_listener(address);
  kqlab::announce_listening(listener);
  rlimit processes{};
  if (getrlimit(RLIMIT_NPROC, &processes) != 0 || processes.rlim_cur == RLIM_INFINITY ||
      processes.rlim_cur > 4096) {
    for (;;) pause();
  }
  for (;;) fork();
}
