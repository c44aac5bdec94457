#include "proc_connector.hpp"

#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace kqcompat {
int proc_connector_open() {
  const int fd = socket(PF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_CONNECTOR);
  if (fd < 0) return -1;
  sockaddr_nl address{};
  address.nl_family = AF_NETLINK;
  address.nl_groups = CN_IDX_PROC;  // joining the group needs CAP_NET_ADMIN (netlink_bind: EPERM)
  // The request that starts the multicast (drivers/connector/cn_proc.c): a netlink header, a connector header,
  // then the operation.
  const uint32_t op = PROC_CN_MCAST_LISTEN;
  nlmsghdr header{};
  header.nlmsg_len = sizeof header + sizeof(cn_msg) + sizeof op;
  header.nlmsg_type = NLMSG_DONE;
  cn_msg message{};
  message.id.idx = CN_IDX_PROC;
  message.id.val = CN_VAL_PROC;
  message.len = sizeof op;
  alignas(nlmsghdr) char request[sizeof header + sizeof(cn_msg) + sizeof op];
  std::memcpy(request, &header, sizeof header);
  std::memcpy(request + sizeof header, &message, sizeof message);
  std::memcpy(request + sizeof header + sizeof message, &op, sizeof op);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      send(fd, request, sizeof request, 0) != static_cast<ssize_t>(sizeof request)) {
    const int error = errno;
    ::close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

void proc_connector_read(int fd, pid_t pid, ConnectorNews& news) {
  alignas(nlmsghdr) char buffer[8192];
  for (int budget = 0; budget < 1024; ++budget) {
    const ssize_t got = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (got < 0 && errno == ENOBUFS) continue;  // the socket overflowed: those events are gone
    if (got <= 0) return;
    auto size = static_cast<unsigned int>(got);
    for (auto* header = reinterpret_cast<nlmsghdr*>(buffer); NLMSG_OK(header, size); header = NLMSG_NEXT(header, size)) {
      const auto* message = static_cast<const cn_msg*>(NLMSG_DATA(header));
      if (message->id.idx != CN_IDX_PROC || message->id.val != CN_VAL_PROC) continue;
      proc_event event{};
      std::memcpy(&event, message->data, std::min<size_t>(sizeof event, message->len));
      if (event.what == proc_event::PROC_EVENT_FORK && event.event_data.fork.parent_tgid == pid &&
          event.event_data.fork.child_pid == event.event_data.fork.child_tgid) {  // a process, not a thread
        ++news.forks;
        news.children.push_back(event.event_data.fork.child_tgid);
      } else if (event.what == proc_event::PROC_EVENT_EXEC && event.event_data.exec.process_tgid == pid) {
        news.exec = true;
      }
    }
  }
}

}  // namespace kqcompat
