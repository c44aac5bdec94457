// One client's connection, as both of the lesson's servers keep it: the bytes read that do not make a whole line
// yet, and the answers not yet written. It knows nothing of threads or kqueue: which thread may call it, and when,
// is the servers' business (one at a time, always).
#pragma once

#include <atomic>
#include <string>

class Connection {
 public:
  // What the connection waits for after a call.
  enum class Outcome {
    kInput,  // more requests: wait until the socket is readable
    kRoom,   // answers are waiting for room in the socket: wait until it is writable, and read nothing meanwhile
    kEnded,  // over: the client finished and has every answer, or the connection failed, or was cancelled
  };

  // Takes `fd`, a connected non-blocking socket; the destructor closes it.
  explicit Connection(int fd);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int fd() const { return fd_; }

  // Reads what the client has sent, until the socket has no more; answers each whole line (the slow part) and
  // writes the answers. Stops reading while answers wait for room (back-pressure).
  Outcome serve();

  // Writes the answers still waiting.
  Outcome flush();

  // From any thread: abandons the connection. The answer being computed is given up, the client sees the
  // connection end at once (shutdown), and the next serve() or flush() says kEnded. The descriptor stays open
  // until the destructor, so that its number cannot be reused while a thread may still be using it.
  void cancel();

 private:
  Outcome answer_lines();

  int fd_;
  std::string received_;  // bytes read that do not make a whole line yet
  std::string unsent_;    // answers not yet written
  bool input_ended_ = false;  // the client has sent all it will (or sent a line too long): answer, then end
  std::atomic<bool> cancelled_{false};
};
