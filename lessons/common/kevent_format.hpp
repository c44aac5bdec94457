// How the lessons print a struct kevent, in their error messages:
//
//     EVFILT_READ fd=5 EV_ADD|EV_CLEAR data=12 udata=0x6020000000f0
//
// On Linux, compat's KQLAB_TRACE prints changes and events the same way, with a formatter of its own
// (compat/src/trace_format.hpp: the layer depends on nothing outside compat/), so what a student sees in a trace
// and in a message reads alike.
#pragma once

#include <sys/event.h>

#include <string>

namespace kqlab {

// "EVFILT_READ", or "filter(-42)" for a number no filter has.
std::string filter_name(short filter);

// "EV_ADD|EV_CLEAR", "0" for none; bits without a name print as hex.
std::string flag_names(unsigned short flags);

// The whole event on one line: filter, ident (named by what it is: fd, pid, sig, id), flags, and then fflags,
// data and udata where they are not zero.
std::string describe(const struct kevent& event);

}  // namespace kqlab
