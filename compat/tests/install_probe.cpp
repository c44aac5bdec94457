// A small kqueue program, as a user of the installed layer writes it: compiled by install_test.cmake with only
// what `pkg-config --cflags --libs kqueue-compat` gives. A one-shot timer of 10 ms must fire once.
#include <sys/event.h>
#include <unistd.h>

#include <cstdio>

int main() {
  const int kq = kqueue();
  if (kq < 0) {
    std::perror("kqueue");
    return 1;
  }
  struct kevent change, event;
  EV_SET(&change, 1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 10, nullptr);
  const timespec limit{5, 0};
  const int n = kevent(kq, &change, 1, &event, 1, &limit);
  if (n != 1 || event.filter != EVFILT_TIMER || event.ident != 1) {
    std::perror("kevent");
    return 1;
  }
  std::printf("timer fired\n");
  close(kq);
  return 0;
}
