#include "kevent_format.hpp"

#include <csignal>
#include <cstdio>
#include <cstring>

namespace kqlab {
namespace {

struct Named {
  long value;
  const char* name;
};

// Filters are small negative numbers; each platform defines its own set, so only the names it has are listed.
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

// What the ident of each filter means, so "fd=5" and "pid=812" tell the reader what they are looking at.
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
  auto append = [&text](const std::string& name) {
    if (!text.empty()) text += '|';
    text += name;
  };
  unsigned short rest = value;
  for (const auto& known : flags) {
    if (!(value & known.value)) continue;
    append(known.name);
    rest &= static_cast<unsigned short>(~known.value);
  }
  if (rest) append(hex(rest));
  return text.empty() ? "0" : text;
}

std::string describe(const struct kevent& event) {
  std::string text = filter_name(event.filter) + " " + ident_of(event) + " " + flag_names(event.flags);
  if (event.fflags) text += " fflags=" + hex(event.fflags);
  if (event.data) text += " data=" + std::to_string(static_cast<long long>(event.data));
  if (event.udata) text += " udata=" + hex(reinterpret_cast<unsigned long>(event.udata));
  return text;
}

}  // namespace kqlab
