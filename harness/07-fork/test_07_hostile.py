"""Lesson 07 against hostile clients: a worker applies lesson 05's output limit. A client that sends requests and
never reads their replies is made to wait (TCP stops it), instead of growing its worker's memory; meanwhile the
other clients are served."""
from pathlib import Path

from vocabulary import SMALL_BUFFER, largest_send_buffer, see, seconds

MOST_OWED = 1 << 20  # the replies owed to one client past which its worker stops reading its requests


def largest_receive_buffer() -> int:
    path = Path("/proc/sys/net/ipv4/tcp_rmem")
    return int(path.read_text().split()[2]) if path.exists() else 8 << 20


@see("The program you are finishing")
def test_client_that_never_reads_is_made_to_wait(server, story):
    # `pid` requests: each reply is longer than its request. Far more of them than the socket buffers and the
    # worker's allowance hold together.
    requests = b"pid\n" * ((2 * largest_send_buffer() + largest_receive_buffer() + MOST_OWED + (8 << 20)) // 4)
    flooder = server.connect(receive_buffer=SMALL_BUFFER)
    sent = flooder.send_until_stuck(requests)
    if len(sent) == len(requests):
        story.fail(f"the worker to stop reading from a client that sends and reads nothing, once it owes it "
                   f"{MOST_OWED} bytes", f"it took all {len(requests)} bytes of requests, and owes their replies")
    steady = server.connect()
    steady.send(b"pid\n")
    [(_, reply)] = steady.receive_lines(1, within=seconds(1))
    if not reply.strip().isdigit():
        story.fail("a worker's pid, within a second, while another client floods", repr(reply))
    flooder.reset()
