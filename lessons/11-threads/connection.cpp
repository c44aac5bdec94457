// A connection's bytes: see connection.hpp.
#include "connection.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>

#include "factor.hpp"

namespace {

// A request is a number: a "line" longer than this is not one, and is not worth buffering.
constexpr std::size_t kLongestLine = 64;

// Read no more while this much is waiting to be written: a client that sends requests and never reads the answers
// must not make the server buffer without limit.
constexpr std::size_t kMostUnsent = 64 * 1024;

}  // namespace

Connection::Connection(int fd) : fd_(fd) {}

Connection::~Connection() { close(fd_); }

Connection::Outcome Connection::serve() {
  char buffer[4096];
  while (!input_ended_ && unsent_.size() < kMostUnsent) {
    if (cancelled_.load()) return Outcome::kEnded;
    const ssize_t got = read(fd_, buffer, sizeof buffer);
    if (got > 0) {
      received_.append(buffer, static_cast<std::size_t>(got));
      if (answer_lines() == Outcome::kEnded) return Outcome::kEnded;
      continue;
    }
    if (got == 0) {
      input_ended_ = true;  // the client will send nothing more; an unfinished last line is answered as it is
      if (!received_.empty()) received_ += '\n';
      if (answer_lines() == Outcome::kEnded) return Outcome::kEnded;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    return Outcome::kEnded;  // ECONNRESET and the like: nobody to answer
  }
  return flush();
}

Connection::Outcome Connection::answer_lines() {
  for (std::size_t end; (end = received_.find('\n')) != std::string::npos;) {
    const std::string line = received_.substr(0, end);
    received_.erase(0, end + 1);  // taken: the request is this call's to answer
    std::string answer = factor_request(line, cancelled_);
    if (cancelled_.load()) return Outcome::kEnded;
    unsent_ += answer;
  }
  if (received_.size() > kLongestLine) {
    unsent_ += "error: a request is a number on a line of its own, at most 64 characters\n";
    received_.clear();
    input_ended_ = true;  // the rest of the stream cannot be trusted to be in step: answer, then end
  }
  return Outcome::kInput;
}

Connection::Outcome Connection::flush() {
  while (!unsent_.empty()) {
    if (cancelled_.load()) return Outcome::kEnded;
    const ssize_t sent = write(fd_, unsent_.data(), unsent_.size());
    if (sent > 0) {
      unsent_.erase(0, static_cast<std::size_t>(sent));
    } else if (sent == -1 && errno == EINTR) {
      continue;
    } else if (sent == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return Outcome::kRoom;
    } else {
      return Outcome::kEnded;  // EPIPE, ECONNRESET: the client is gone
    }
  }
  return input_ended_ || cancelled_.load() ? Outcome::kEnded : Outcome::kInput;
}

void Connection::cancel() {
  cancelled_.store(true);
  shutdown(fd_, SHUT_RDWR);  // the client sees the end now, not when the last thread lets go of the connection
}
