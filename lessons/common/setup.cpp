#include "setup.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace kqlab {
namespace {

const char* program_name = "server";

// The lesson's own options, for the usage text, while parse_arguments runs.
const std::vector<NumberOption>* lesson_options = nullptr;
const std::vector<TextOption>* lesson_texts = nullptr;

// " [--idle-ms N]" for each of the lesson's options.
std::string option_synopsis() {
  std::string text;
  if (lesson_options) {
    for (const NumberOption& option : *lesson_options) text += std::string(" [") + option.name + " N]";
  }
  if (lesson_texts) {
    for (const TextOption& option : *lesson_texts) {
      text += std::string(" [") + option.name + " " + option.placeholder + "]";
    }
  }
  return text;
}

[[noreturn]] void usage_error(const std::string& problem, const char* summary) {
  std::fprintf(stderr,
               "%s: %s\n"
               "usage: %s [--host ADDRESS] [--port PORT]%s\n"
               "  %s\n"
               "  --host ADDRESS  numeric IPv4 or IPv6 address to listen on (default 127.0.0.1)\n"
               "  --port PORT     TCP port to listen on, 0 lets the kernel pick a free one (default 0)\n",
               program_name, problem.c_str(), program_name, option_synopsis().c_str(), summary);
  if (lesson_options) {
    for (const NumberOption& option : *lesson_options) {
      std::fprintf(stderr, "  %s N  %s (default %lld)\n", option.name, option.help, *option.value);
    }
  }
  if (lesson_texts) {
    for (const TextOption& option : *lesson_texts) {
      std::fprintf(stderr, "  %s %s  %s%s%s%s\n", option.name, option.placeholder, option.help,
                   option.value->empty() ? "" : " (default ", option.value->c_str(), option.value->empty() ? "" : ")");
    }
  }
  std::exit(2);
}

// The whole number `text` spells, if it is one from min to max.
bool parse_number(const std::string& text, long long min, long long max, long long* value) {
  long long parsed = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, parsed);
  if (text.empty() || error != std::errc() || stop != end || parsed < min || parsed > max) return false;
  *value = parsed;
  return true;
}

bool is_port(const std::string& text) {
  if (text.empty() || text.size() > 5 || text.find_first_not_of("0123456789") != std::string::npos) return false;
  return std::stoi(text) <= 65535;
}

// The numeric host and port of a socket's own address (`get` = getsockname) or of its peer's (getpeername), as
// getnameinfo() spells them; "" if the call fails.
std::string address_text(int socket, int (*get)(int, sockaddr*, socklen_t*)) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (get(socket, reinterpret_cast<sockaddr*>(&address), &length) == -1) return "";
  char host[NI_MAXHOST];
  char port[NI_MAXSERV];
  const int status = getnameinfo(reinterpret_cast<sockaddr*>(&address), length, host, sizeof host, port,
                                 sizeof port, NI_NUMERICHOST | NI_NUMERICSERV);
  if (status != 0) {
    std::fprintf(stderr, "getnameinfo: %s\n", gai_strerror(status));
    std::exit(1);
  }
  // An IPv6 address has colons of its own: bracket it, as in URLs, so the port stays unambiguous.
  const bool ipv6 = address.ss_family == AF_INET6;
  std::string text = ipv6 ? "[" : "";
  text += host;
  text += ipv6 ? "]:" : ":";
  text += port;
  return text;
}

}  // namespace

Address parse_arguments(int argc, char** argv, const char* summary) {
  return parse_arguments(argc, argv, summary, {});
}

Address parse_arguments(int argc, char** argv, const char* summary, const std::vector<NumberOption>& options) {
  return parse_arguments(argc, argv, summary, options, {});
}

Address parse_arguments(int argc, char** argv, const char* summary, const std::vector<NumberOption>& options,
                        const std::vector<TextOption>& texts) {
  if (argc > 0) {
    const char* slash = std::strrchr(argv[0], '/');
    program_name = slash ? slash + 1 : argv[0];
  }
  lesson_options = &options;
  lesson_texts = &texts;
  Address address;
  for (int i = 1; i < argc; ++i) {
    const std::string option = argv[i];
    if (option == "--help" || option == "-h") {
      std::printf("usage: %s [--host ADDRESS] [--port PORT]%s\n  %s\n", program_name, option_synopsis().c_str(),
                  summary);
      std::exit(0);
    }
    const NumberOption* own = nullptr;
    for (const NumberOption& candidate : options) {
      if (option == candidate.name) own = &candidate;
    }
    const TextOption* own_text = nullptr;
    for (const TextOption& candidate : texts) {
      if (option == candidate.name) own_text = &candidate;
    }
    if (option != "--host" && option != "--port" && !own && !own_text) {
      usage_error("unknown option '" + option + "'", summary);
    }
    if (i + 1 == argc) usage_error(option + " needs a value", summary);
    const std::string value = argv[++i];
    if (own_text) {
      *own_text->value = value;
    } else if (own) {
      if (!parse_number(value, own->min, own->max, own->value)) {
        usage_error(option + " wants a whole number from " + std::to_string(own->min) + " to " +
                        std::to_string(own->max) + ", not '" + value + "'",
                    summary);
      }
    } else if (option == "--host") {
      address.host = value;
    } else if (is_port(value)) {
      address.port = value;
    } else {
      usage_error("--port wants a number from 0 to 65535, not '" + value + "'", summary);
    }
  }
  lesson_options = nullptr;  // `options` may be a temporary: the usage text is printed only while parsing
  lesson_texts = nullptr;
  return address;
}

int open_listener(const Address& address) {
  // AI_NUMERICHOST: never ask DNS. A name lookup blocks, and nothing in these servers may block.
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (getaddrinfo(address.host.c_str(), address.port.c_str(), &hints, &found) != 0) {
    std::fprintf(stderr, "%s: --host wants a numeric IP address such as 127.0.0.1 or ::1, not '%s'\n", program_name,
                 address.host.c_str());
    std::exit(2);
  }
  const int listener = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  if (listener == -1) fail("socket");
  // Restarting a server must not wait for the old connections' TIME_WAIT to expire before it can bind again.
  const int on = 1;
  if (setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) == -1) fail("setsockopt(SO_REUSEADDR)");
  if (bind(listener, found->ai_addr, found->ai_addrlen) == -1) {
    const int error = errno;
    fail("bind " + address.host + " port " + address.port, error);
  }
  freeaddrinfo(found);
  if (listen(listener, SOMAXCONN) == -1) fail("listen");
  set_nonblocking(listener);
  return listener;
}

void announce_listening(int listener) {
  const std::string address = address_text(listener, getsockname);
  if (address.empty()) fail("getsockname");
  std::printf("listening on %s\n", address.c_str());
  std::fflush(stdout);
}

std::string peer_address(int socket) { return address_text(socket, getpeername); }

void set_nonblocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags == -1 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1) fail("fcntl(O_NONBLOCK)");
}

void fail(const std::string& what, int error) {
  std::fprintf(stderr, "%s: %s\n", what.c_str(), std::strerror(error));
  std::exit(1);
}

}  // namespace kqlab
