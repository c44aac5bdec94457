// The kqueue layer's own memory per watched descriptor: what compat/ allocates in user space for a knote, beside
// what the kernel keeps for the epoll entry (which a raw-epoll server pays too).
//
//   layer_memory [N]   (default 10000; N descriptors: both ends of N/2 socket pairs)
//
// Heap in use (mallinfo2's uordblks, glibc) is read before and after registering EVFILT_READ on each descriptor,
// as an echo server does for an idle connection, and again after adding EVFILT_WRITE to each (a connection with
// output pending). The socket pairs are made first, so only the layer's allocations fall between the readings.
// Meaningful in a release build: under AddressSanitizer the heap is ASan's and mallinfo2 does not see it.
#include <malloc.h>
#include <sys/event.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

size_t heap_in_use() { return mallinfo2().uordblks; }

void add(int kq, int fd, short filter) {
  struct kevent change;
  EV_SET(&change, fd, filter, EV_ADD, 0, 0, nullptr);
  if (kevent(kq, &change, 1, nullptr, 0, nullptr) == -1) {
    std::perror("kevent(EV_ADD)");
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 10000;
  if (count < 2 || count % 2) {
    std::fprintf(stderr, "usage: layer_memory [N]  (an even number of descriptors, at least 2)\n");
    return 2;
  }
  rlimit limit{static_cast<rlim_t>(count) + 64, static_cast<rlim_t>(count) + 64};
  rlimit current;
  getrlimit(RLIMIT_NOFILE, &current);
  if (current.rlim_cur < limit.rlim_cur && setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    limit.rlim_max = current.rlim_max;
    if (current.rlim_max < limit.rlim_cur || setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      std::fprintf(stderr, "layer_memory: %d descriptors do not fit in the hard limit (ulimit -Hn %ju)\n", count,
                   static_cast<uintmax_t>(current.rlim_max));
      return 2;
    }
  }
  const int kq = kqueue();
  if (kq == -1) {
    std::perror("kqueue");
    return 1;
  }
  // One descriptor first, so that what every queue allocates once (its first table slots) is not counted.
  int warm[2];
  socketpair(AF_UNIX, SOCK_STREAM, 0, warm);
  add(kq, warm[0], EVFILT_READ);

  std::vector<int> fds(static_cast<size_t>(count));
  for (int i = 0; i < count; i += 2) {
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, &fds[static_cast<size_t>(i)]) == -1) {
      std::perror("socketpair");
      return 1;
    }
  }
  const size_t before = heap_in_use();
  for (const int fd : fds) add(kq, fd, EVFILT_READ);
  const size_t with_read = heap_in_use();
  for (const int fd : fds) add(kq, fd, EVFILT_WRITE);
  const size_t with_both = heap_in_use();

  const double read_only = static_cast<double>(with_read - before) / count;
  const double both = static_cast<double>(with_both - before) / count;
  std::printf("layer memory per descriptor, %d descriptors in one kqueue (heap in use, mallinfo2):\n", count);
  std::printf("  EVFILT_READ only (an idle connection)   %7.1f bytes\n", read_only);
  std::printf("  EVFILT_READ and EVFILT_WRITE            %7.1f bytes\n", both);
  std::printf("{\"descriptors\": %d, \"bytes_read_only\": %.1f, \"bytes_read_write\": %.1f}\n", count, read_only, both);
  return 0;
}
