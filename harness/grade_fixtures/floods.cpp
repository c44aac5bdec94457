// A grade fixture (harness/test_grade.py): a server that prints without end. It starts like any lesson server,
// then closes each connection at once and writes line after line, forever: to its own stdout and stderr, which
// the harness reads, and, through /proc, to the standard output of its parent, the test runner. That output
// reaches the grader (pytest shows it with each failure), which must cut it off.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "setup.hpp"

int main(int argc, char** argv) {
  const kqlab::Address address = kqlab::parse_arguments(argc, argv, "A server that prints without end.");
  const int listener = kqlab::open_listener(address);  // non-blocking: accept() returns at once
  kqlab::announce_listening(listener);
  const std::string parent = "/proc/" + std::to_string(getppid()) + "/fd/1";
  const int runner = open(parent.c_str(), O_WRONLY);
  // A reader that falls behind must not slow the flood down: what a full pipe does not take is dropped.
  for (int fd : {1, 2, runner}) {
    if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  std::string lines;
  while (lines.size() < 64 * 1024) lines += "flood flood flood flood flood flood flood flood flood flood flood\n";
  for (;;) {
    const int client = accept(listener, nullptr, nullptr);
    if (client >= 0) close(client);
    for (int fd : {1, 2, runner}) {
      if (fd >= 0 && write(fd, lines.data(), lines.size()) < 0) {
        // Full for now, or its reader went away: flood the others.
      }
    }
  }
}
