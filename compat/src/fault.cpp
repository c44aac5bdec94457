#include "fault.hpp"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "trace_format.hpp"

namespace kqcompat {
namespace {

struct Fault {
  bool armed = false;
  short filter = 0;
  int error = 0;
  long nth = 1;
};

int errno_from(const std::string& name) {
  static const struct {
    const char* name;
    int value;
  } known[] = {{"ENOMEM", ENOMEM}, {"EBADF", EBADF},   {"EINVAL", EINVAL}, {"ENOENT", ENOENT}, {"EPERM", EPERM},
               {"EACCES", EACCES}, {"ESRCH", ESRCH},   {"EMFILE", EMFILE}, {"ENFILE", ENFILE}, {"EFAULT", EFAULT},
               {"ENOSPC", ENOSPC}, {"EEXIST", EEXIST}, {"EINTR", EINTR},   {"EAGAIN", EAGAIN}};
  for (const auto& entry : known) {
    if (name == entry.name) return entry.value;
  }
  char* end = nullptr;
  const long number = std::strtol(name.c_str(), &end, 10);
  return (!name.empty() && *end == '\0' && number > 0 && number < 4096) ? static_cast<int>(number) : 0;
}

short filter_from(const std::string& name) {
  for (short filter = -1; filter >= -15; --filter) {
    if (format::filter_name(filter) == name) return filter;
  }
  return 0;
}

Fault parse(const char* text) {
  Fault fault;
  if (text == nullptr || *text == '\0') return fault;
  const std::string value = text;
  const auto first = value.find(':');
  const auto second = first == std::string::npos ? std::string::npos : value.find(':', first + 1);
  fault.filter = filter_from(value.substr(0, first));
  fault.error = first == std::string::npos ? 0 : errno_from(value.substr(first + 1, second - first - 1));
  if (second != std::string::npos) {
    char* end = nullptr;
    fault.nth = std::strtol(value.c_str() + second + 1, &end, 10);
    if (*end != '\0') fault.nth = 0;
  }
  fault.armed = fault.filter != 0 && fault.error != 0 && fault.nth > 0;
  if (!fault.armed) {
    std::fprintf(stderr, "kqlab: KQLAB_FAULT=%s is not FILTER:ERRNO[:N] (e.g. EVFILT_READ:ENOMEM:2); ignored\n", text);
  }
  return fault;
}

const Fault& chosen() {
  static const Fault fault = parse(std::getenv("KQLAB_FAULT"));  // read once, at the first change
  return fault;
}

std::atomic<long> adds_seen{0};

}  // namespace

int injected_fault(const struct kevent& change) {
  const Fault& fault = chosen();
  if (!fault.armed || change.filter != fault.filter || !(change.flags & EV_ADD)) return 0;
  return adds_seen.fetch_add(1) + 1 == fault.nth ? fault.error : 0;
}

}  // namespace kqcompat
