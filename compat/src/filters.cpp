// Which filters the layer has. Adding a filter: write its file (filter_NAME.cpp, filling FilterOps), then add
// it here and to CMakeLists.txt.
#include "filter.hpp"

namespace kqcompat {

const FilterOps* filter_ops(short filter) {
  switch (filter) {
    case EVFILT_READ:
      return &read_filter;
    case EVFILT_WRITE:
      return &write_filter;
    case EVFILT_TIMER:
      return &timer_filter;
    case EVFILT_USER:
      return &user_filter;
    case EVFILT_SIGNAL:
      return &signal_filter;
    case EVFILT_PROC:
      return &proc_filter;
    case EVFILT_VNODE:
      return &vnode_filter;
    default:
      return nullptr;
  }
}

bool is_descriptor_filter(short filter) {
  return filter == EVFILT_READ || filter == EVFILT_WRITE || filter == EVFILT_VNODE;
}

}  // namespace kqcompat
