// A grade fixture (harness/test_grade.py): a server that crashes. It starts like any lesson server, then dies of
// SIGSEGV at its first client, as a wild pointer would make it: the grader must report the crash.
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>

#include "setup.hpp"

int main(int argc, char** argv) {
  const kqlab::Address address = kqlab::parse_arguments(argc, argv, "A server that crashes at its first client.");
  const int listener = kqlab::open_listener(address);
  kqlab::announce_listening(listener);
  while (accept(listener, nullptr, nullptr) == -1) usleep(1000);
  std::raise(SIGSEGV);
}
