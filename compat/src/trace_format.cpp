#include "trace_format.hpp"

#include <csignal>
#include <cstdio>
#include <cstring>

namespace kqcompat::format {
namespace {

struct Named {
  long value;
  const char* name;
};

constexpr Named filters[] = {
    {EVFILT_READ, "EVFILT_READ"},     {EVFILT_WRITE, "EVFILT_WRITE"},   {EVFILT_VNODE, "EVFILT_VNODE"},
    {EVFILT_PROC, "EVFILT_PROC"},     {EVFILT_SIGNAL, "EVFILT_SIGNAL"}, {EVFILT_TIMER, "EVFILT_TIMER"},
    {EVFILT_USER, "EVFILT_USER"},
};

constexpr Named flags[] = {
    {EV_ADD, "EV_ADD"},         {EV_DELETE, "EV_DELETE"},     {EV_ENABLE, "EV_ENABLE"},
    {EV_DISABLE, "EV_DISABLE"}, {EV_ONESHOT, "EV_ONESHOT"},   {EV_CLEAR, "EV_CLEAR"},
    {EV_RECEIPT, "EV_RECEIPT"}, {EV_DISPATCH, "EV_DISPATCH"}, {EV_EOF, "EV_EOF"},
    {EV_ERROR, "EV_ERROR"},
};

std::string hex(unsigned long value) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%lx", value);
  return text;
}

// What the ident means for each filter, so that "fd=5" and "pid=812" say what they are.
std::string ident_of(const struct kevent& event) {
  const auto ident = std::to_string(event.ident);
  switch (event.filter) {
    case EVFILT_READ:
    case EVFILT_WRITE:
    case EVFILT_VNODE:
      return "fd=" + ident;
    case EVFILT_PROC:
      return "pid=" + ident;
    case EVFILT_SIGNAL: {
      const char* abbrev = event.ident < NSIG ? sigabbrev_np(static_cast<int>(event.ident)) : nullptr;
      return "sig=" + ident + (abbrev ? std::string("(SIG") + abbrev + ")" : "");
    }
    default:
      return "id=" + ident;
  }
}

}  // namespace

std::string filter_name(short filter) {
  for (const auto& known : filters) {
    if (known.value == filter) return known.name;
  }
  return "filter(" + std::to_string(filter) + ")";
}

std::string flag_names(unsigned short value) {
  std::string text;
  unsigned short rest = value;
  for (const auto& known : flags) {
    if (!(value & known.value)) continue;
    // Appended piece by piece: `separator + std::string(...)` trips GCC 12's -Wrestrict in optimised builds.
    if (!text.empty()) text += '|';
    text += known.name;
    rest &= static_cast<unsigned short>(~known.value);
  }
  if (rest) {
    if (!text.empty()) text += '|';
    text += hex(rest);
  }
  return text.empty() ? "0" : text;
}

std::string event(const struct kevent& event) {
  std::string text = filter_name(event.filter) + " " + ident_of(event) + " " + flag_names(event.flags);
  if (event.fflags) text += " fflags=" + hex(event.fflags);
  if (event.data) text += " data=" + std::to_string(static_cast<long long>(event.data));
  if (event.udata) text += " udata=" + hex(reinterpret_cast<unsigned long>(event.udata));
  return text;
}

// A receipt is no error: EV_ERROR with data 0 is how kevent() says "this change was applied" (kqueue(2),
// EV_RECEIPT). Printed as an error, it sends a beginner hunting for a bug that is not there.
std::string receipt(const struct kevent& entry) {
  const auto error = static_cast<int>(entry.data);
  const std::string what = filter_name(entry.filter) + " " + ident_of(entry);
  if (error == 0) return what + ": ok (EV_ERROR, data=0)";
  const char* name = strerrorname_np(error);
  return what + ": " + (name ? name : "errno " + std::to_string(error)) + ", " + std::strerror(error) +
         " (EV_ERROR, data=" + std::to_string(error) + ")";
}

}  // namespace kqcompat::format
