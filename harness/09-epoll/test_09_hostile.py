"""Lesson 09 against a hostile client: one that sends without pause and never reads. The server stops reading from
it once it owes it kMostPending bytes (lesson 05's limit), so TCP makes it wait, and reads on by itself when the
client catches up: edge-triggered, no report reminds it of the bytes it left. Run on both builds."""
from pathlib import Path

import pytest

from vocabulary import SMALL_BUFFER, largest_send_buffer, patterned, see, seconds

MOST_PENDING = 1 << 20


@pytest.fixture(params=["kqueue", "epoll"])
def program_name(request) -> str:
    return request.param


def largest_receive_buffer() -> int:
    path = Path("/proc/sys/net/ipv4/tcp_rmem")
    return int(path.read_text().split()[2]) if path.exists() else 8 << 20


@see("Edge-triggered: drain to EAGAIN")
def test_client_that_never_reads_is_made_to_wait(server, story):
    count = server.open_descriptors()
    payload = patterned(2 * largest_send_buffer() + largest_receive_buffer() + MOST_PENDING + (8 << 20))
    flooder = server.connect(receive_buffer=SMALL_BUFFER)
    sent = flooder.send_until_stuck(payload)
    if len(sent) == len(payload):
        story.fail(f"the server to stop reading from a client that sends and reads nothing, once it owes it "
                   f"{MOST_PENDING} bytes", f"it took all {len(payload)} bytes, and owes them all")
    steady = server.connect()
    steady.send(b"meanwhile\n")
    steady.expect(b"meanwhile\n", within=seconds(1))
    # Reading, the flooder gets every byte back, in order: the server read on what it had left in the kernel.
    flooder.expect(sent, within=seconds(30))
    flooder.send(payload[len(sent):len(sent) + 100000])
    flooder.expect(payload[len(sent):len(sent) + 100000], within=seconds(5))
    flooder.shut_write()
    flooder.expect_close(within=seconds(5))
    steady.close()
    server.expect_descriptors(at_most=count, within=seconds(5))
