// How KQLAB_TRACE writes a struct kevent, one line each:
//
//     EVFILT_READ fd=5 EV_CLEAR|EV_RECEIPT data=12 udata=0x1
//
// and how it writes an EV_ERROR entry, which answers a change rather than reports an event:
//
//     EVFILT_READ fd=5: ok (EV_ERROR, data=0)
//     EVFILT_READ fd=9: ENOENT, No such file or directory (EV_ERROR, data=2)
//
// The layer has its own formatter so that it depends on nothing outside compat/ (it installs on its own). The
// lessons print changes the same way with kqlab::describe (lessons/common/kevent_format.hpp), so that a trace and
// a lesson's error message read alike; the harness reads both (harness/vocabulary.py).
#pragma once

#include <sys/event.h>

#include <string>

namespace kqcompat::format {

// "EVFILT_READ", or "filter(-42)" for a number no filter has.
std::string filter_name(short filter);

// "EV_ADD|EV_CLEAR", "0" for none; bits without a name print as hex.
std::string flag_names(unsigned short flags);

// A change or an event on one line: filter, ident (named by what it is: fd, pid, sig, id), flags, and then
// fflags, data and udata where they are not zero.
std::string event(const struct kevent& event);

// An EV_ERROR entry: the change it answers (filter and ident), then "ok" for data 0, or the errno it carries.
std::string receipt(const struct kevent& entry);

}  // namespace kqcompat::format
