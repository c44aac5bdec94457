"""Lesson 10's chat server against hostile clients: the limits of lessons 03 and 05 on top of the reactor. A line
that never ends makes its sender leave; a member that never reads while the room talks is let go once 1 MiB
behind; everyone else is served throughout, and nothing is left open."""
import contextlib
import socket

import pytest

from vocabulary import SMALL_BUFFER, see, seconds

LONGEST_LINE = 4096
MOST_BEHIND = 1 << 20


@pytest.fixture
def program_name() -> str:
    return "chat"


def name_of(client) -> str:
    host, port = client.socket.getsockname()[:2]
    return f"{host}:{port}"


def joined(server, *clients) -> None:
    """The last client says hello; once the others hear it, the server has accepted them all (in order)."""
    clients[-1].send(b"hello\n")
    for client in clients[:-1]:
        client.expect(f"{name_of(clients[-1])}: hello\n".encode(), within=seconds(2))


def chat_works(speaker, listener, text: str) -> None:
    speaker.send(f"{text}\n".encode())
    listener.expect(f"{name_of(speaker)}: {text}\n".encode(), within=seconds(1))


@see("The servers on top")
def test_line_that_never_ends_makes_its_sender_leave(server, story):
    alice, bob = server.connect(), server.connect()
    joined(server, alice, bob)
    count = server.open_descriptors()
    rude = server.connect()
    rude.send_until_stuck(b"x" * (64 * LONGEST_LINE))
    if not rude.closed_within(seconds(3)):
        story.fail(f"the server to let go a member whose line grows past {LONGEST_LINE} bytes",
                   "the connection stayed open: its line is kept growing without end")
    chat_works(bob, alice, "still here")
    server.expect_descriptors(at_most=count, within=seconds(2))


@see("The servers on top")
def test_member_that_never_reads_is_let_go(server, story):
    alice = server.connect()
    sleeper = server.connect(receive_buffer=SMALL_BUFFER)  # reads nothing from the room's talk
    bob = server.connect()
    joined(server, alice, bob)
    sleeper.closed_within(0.1)  # takes its hello: from here on it reads nothing
    count = server.open_descriptors()
    # Lines for the room, far more than the sleeper's buffers and its allowance hold; alice and bob read them.
    line = b"z" * 1000 + b"\n"
    with story.summarized("alice sent 16 MB of lines; bob read them all, the sleeper read nothing"):
        for _ in range(64):
            alice.send(line * 256)
            bob.expect(f"{name_of(alice)}: ".encode().join([b""] + [line] * 256), within=seconds(5))
    if not sleeper.closed_within(seconds(3)):
        story.fail(f"the server to let go a member more than {MOST_BEHIND} bytes behind",
                   "its connection stayed open: the server buffers for it without end")
    chat_works(alice, bob, "after")
    server.expect_descriptors(at_most=count - 1, within=seconds(2))


@see("The servers on top")
def test_descriptor_limit_flood(start_server, story):
    server = start_server(descriptor_limit=64)
    alice, bob = server.connect(), server.connect()
    joined(server, alice, bob)
    connections = []
    try:
        with story.summarized("200 more clients connected at once, more than the server has descriptors for"):
            for _ in range(200):
                connections.append(socket.create_connection((server.host, server.port), timeout=seconds(5)))
        chat_works(alice, bob, "during the flood")
        server.wait_until_quiet()
        server.expect_idle(window=seconds(1))
    finally:
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()
    story.step("the 200 clients of the flood closed their connections")
    server.wait_until_quiet()
    carol = server.connect()
    joined(server, alice, bob, carol)  # a newcomer is in the room within the bound
