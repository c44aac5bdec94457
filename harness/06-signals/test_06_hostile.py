"""Lesson 06 against hostile clients: what lesson 05 taught, applied by the given code of this lesson's server. At
the descriptor limit it turns connections away and goes on serving without spinning; a client that sends
requests and never reads their replies is made to wait instead of growing the server's memory."""
import contextlib
import socket
from pathlib import Path

from vocabulary import SMALL_BUFFER, largest_send_buffer, see, seconds

MOST_OWED = 1 << 20  # the replies owed to one client past which the server stops reading its requests


def greeted(server):
    client = server.connect()
    client.expect(b"hello\n")
    return client


def echoed(client, text: str, within: float) -> None:
    client.send(f"echo {text}\n".encode())
    client.expect(f"{text}\n".encode(), within=within)


def largest_receive_buffer() -> int:
    path = Path("/proc/sys/net/ipv4/tcp_rmem")
    return int(path.read_text().split()[2]) if path.exists() else 8 << 20


@see("The program you are finishing")
def test_descriptor_limit_flood(start_server, story):
    server = start_server(descriptor_limit=64)
    steady = greeted(server)
    echoed(steady, "before the flood", within=seconds(2))
    connections = []
    try:
        with story.summarized("200 more clients connected at once, more than the server has descriptors for"):
            for _ in range(200):
                connections.append(socket.create_connection((server.host, server.port), timeout=seconds(5)))
        echoed(steady, "during the flood", within=seconds(5))
        server.wait_until_quiet()
        server.expect_idle(window=seconds(1))  # a level-triggered listener at EMFILE, not emptied, spins
    finally:
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()
    story.step("the 200 clients of the flood closed their connections")
    server.wait_until_quiet()
    newcomer = greeted(server)
    echoed(newcomer, "after the flood", within=seconds(1))


@see("The program you are finishing")
def test_client_that_never_reads_is_made_to_wait(server, story):
    steady = greeted(server)
    count = server.open_descriptors()
    # Far more than the socket buffers and the server's allowance hold together: echo requests, whose replies are
    # as long as they are, sent by a client that reads nothing.
    line = b"echo " + b"y" * 1018 + b"\n"
    flood = line * ((2 * largest_send_buffer() + largest_receive_buffer() + MOST_OWED + (8 << 20)) // len(line))
    flooder = server.connect(receive_buffer=SMALL_BUFFER)
    sent = flooder.send_until_stuck(flood)
    if len(sent) == len(flood):
        story.fail(f"the server to stop reading from a client that sends and reads nothing, once it owes it "
                   f"{MOST_OWED} bytes", f"it took all {len(flood)} bytes, and owes them all")
    echoed(steady, "meanwhile", within=seconds(1))
    flooder.reset()
    server.expect_descriptors(at_most=count, within=seconds(5))
