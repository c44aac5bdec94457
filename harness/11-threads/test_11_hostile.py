"""Lesson 11's one-queue-per-thread server against a flood of connections past its descriptor limit: each thread
runs lesson 05's loop, so every thread, whichever connections it has had before, survives running out of
descriptors, waits without spinning, and accepts again once descriptors are free."""
import contextlib
import socket

import pytest

from vocabulary import see, seconds


@pytest.fixture
def program_name() -> str:
    return "reuseport"


def factored(client, within: float) -> None:
    client.send(b"12\n")
    client.expect(b"12: 2 2 3\n", within=within)


@see("One queue per thread")
def test_descriptor_limit_flood(start_server, story):
    server = start_server("--threads", "4", descriptor_limit=64)
    steady = server.connect()
    factored(steady, within=seconds(2))
    connections = []
    try:
        with story.summarized("200 more clients connected at once, more than the server has descriptors for; the "
                              "kernel spread them over the four threads"):
            for _ in range(200):
                connections.append(socket.create_connection((server.host, server.port), timeout=seconds(5)))
        factored(steady, within=seconds(5))
        server.wait_until_quiet()
        server.expect_idle(window=seconds(1))
    finally:
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()
    story.step("the 200 clients of the flood closed their connections")
    server.wait_until_quiet()
    newcomer = server.connect()
    factored(newcomer, within=seconds(1))


@see("The program you are finishing")
@pytest.mark.parametrize("program_name", ["workers", "reuseport"])
def test_flood_before_any_client(start_server, story):
    """The flood comes first: the server meets the descriptor limit before it has served anyone, so nothing it does
    at the limit has been done before (a first registration of a kind, a first object of a type)."""
    server = start_server("--threads", "4", descriptor_limit=64)
    with story.summarized("200 clients connected at once, more than the server has descriptors for"):
        connections = [socket.create_connection((server.host, server.port), timeout=seconds(5)) for _ in range(200)]
    server.wait_until_quiet()
    for connection in connections:
        connection.close()
    story.step("the 200 clients closed their connections")
    server.wait_until_quiet()
    newcomer = server.connect()
    factored(newcomer, within=seconds(1))
