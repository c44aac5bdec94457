// What every lesson server does before kqueue enters the story: read --host/--port, open a listening socket, say
// where it listens, and stop with a readable message when a call fails. Kept here so each lesson's own file is
// about events only.
#pragma once

#include <cerrno>
#include <string>
#include <vector>

namespace kqlab {

// Where to listen. The defaults keep a lesson server private to this machine and let the kernel pick a free port.
struct Address {
  std::string host = "127.0.0.1";
  std::string port = "0";
};

// Reads `--host ADDRESS` and `--port PORT` (and `--help`). Anything else prints what is wrong and the usage on
// stderr and exits with status 2; `summary` is the usage's first line, saying what the program does.
Address parse_arguments(int argc, char** argv, const char* summary);

// An option of a lesson's own that takes a whole number, such as `--idle-ms 500`.
struct NumberOption {
  const char* name;   // "--idle-ms"
  const char* help;   // one line for the usage: "close a connection silent for this many milliseconds"
  long long min;      // the smallest and largest value accepted
  long long max;
  long long* value;   // holds the default, and receives the value given on the command line
};

// As above, and also reads each of `options`. A value that is not a whole number from min to max is refused like
// any other bad argument, by name: `--idle-ms wants a whole number from 1 to 86400000, not 'soon'`.
Address parse_arguments(int argc, char** argv, const char* summary, const std::vector<NumberOption>& options);

// An option of a lesson's own that takes a path, or other text, such as `--log /var/log/app.log`.
struct TextOption {
  const char* name;         // "--log"
  const char* placeholder;  // what the usage calls the value: "FILE"
  const char* help;         // one line for the usage: "the file to follow"
  std::string* value;       // holds the default, and receives the value given on the command line
};

// As above, and also reads each of `texts`.
Address parse_arguments(int argc, char** argv, const char* summary, const std::vector<NumberOption>& numbers,
                        const std::vector<TextOption>& texts);

// A non-blocking TCP socket bound to `address` and listening, or the process exits with a message: a bad address
// with status 2, a failing call (say, the port is taken) with status 1.
int open_listener(const Address& address);

// Prints `listening on HOST:PORT` on stdout, flushed: the one line that tells a person, or the test harness, that
// the server is ready and which port the kernel picked.
void announce_listening(int listener);

// The numeric address and port of the peer of a connected socket, written as `listening on` writes addresses:
// `127.0.0.1:50312`, `[::1]:50312`. "" if there is no peer (any more).
std::string peer_address(int socket);

// Makes reads, writes and accepts on `fd` return EAGAIN instead of blocking. An event loop must never block
// anywhere but in kevent(): one slow client would stop all the others.
void set_nonblocking(int fd);

// Prints `what: <the error's text>` (e.g. `kevent: Bad file descriptor`) on stderr and exits with status 1.
// `error` defaults to errno as it is where fail() is called.
[[noreturn]] void fail(const std::string& what, int error = errno);

}  // namespace kqlab
