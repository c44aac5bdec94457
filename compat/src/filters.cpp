// Which filters the layer has. Adding a filter: write its file (filter_NAME.cpp, filling FilterOps), then add
// it here and to CMakeLists.txt.
#include "filter.hpp"

namespace kqcompat {

// Indexed by -filter; the filters FreeBSD has and the layer does not are null (a change for them fails with
// EINVAL).
const FilterOps* const filter_table[kFilterSlots] = {
    nullptr,         // 0: no filter
    &read_filter,    // EVFILT_READ
    &write_filter,   // EVFILT_WRITE
    nullptr,         // EVFILT_AIO
    &vnode_filter,   // EVFILT_VNODE
    &proc_filter,    // EVFILT_PROC
    &signal_filter,  // EVFILT_SIGNAL
    &timer_filter,   // EVFILT_TIMER
    nullptr,         // EVFILT_PROCDESC
    nullptr,         // EVFILT_FS
    nullptr,         // EVFILT_LIO
    &user_filter,    // EVFILT_USER
};
static_assert(EVFILT_READ == -1 && EVFILT_WRITE == -2 && EVFILT_VNODE == -4 && EVFILT_PROC == -5 &&
              EVFILT_SIGNAL == -6 && EVFILT_TIMER == -7 && EVFILT_USER == -11 && EVFILT_SYSCOUNT < kFilterSlots);

bool is_descriptor_filter(short filter) {
  return filter == EVFILT_READ || filter == EVFILT_WRITE || filter == EVFILT_VNODE;
}

}  // namespace kqcompat
