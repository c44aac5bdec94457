"""Lesson 09: the same echo server on kqueue and on epoll. Every test runs against both programs: lesson 01's tests
(an echo server is an echo server), and the two that edge-triggered servers need, draining reads and accepts."""
import platform

import pytest

from vocabulary import flood_past_descriptor_limit, from_lesson, patterned, rerun, see

READ_SIZE = 16 * 1024  # what the server reads at a time (echo_server.cpp, on_readable)


@pytest.fixture(params=["kqueue", "epoll"])
def program_name(request: pytest.FixtureRequest) -> str:
    if request.param == "epoll" and platform.system() != "Linux":
        pytest.skip("epoll is Linux's own: here lesson 09's epoll program is not built (README, section \"Why "
                    "there is no epoll on macOS and FreeBSD\")")
    return request.param


lesson_01 = from_lesson("01-echo")
test_bad_arguments_are_refused = rerun(lesson_01.test_bad_arguments_are_refused, "The program you are finishing")
test_one_client = rerun(lesson_01.test_one_client, "The server, written once")
test_fifty_interleaved_clients = rerun(lesson_01.test_fifty_interleaved_clients, "Edge-triggered: drain to EAGAIN")
test_slow_reader_delays_nobody = rerun(lesson_01.test_slow_reader_delays_nobody,
                                       "Writing: interest only while output waits")
test_eof_with_pending_data = rerun(lesson_01.test_eof_with_pending_data, "End of stream and errors")
test_partial_writes = rerun(lesson_01.test_partial_writes, "Writing: interest only while output waits")
test_no_spinning_while_idle = rerun(lesson_01.test_no_spinning_while_idle, "Writing: interest only while output waits")
test_vanishing_client_disturbs_nobody = rerun(lesson_01.test_vanishing_client_disturbs_nobody,
                                              "End of stream and errors")
test_no_descriptor_leak = rerun(lesson_01.test_no_descriptor_leak, "Closing, and fork")
test_half_close_with_much_still_owed = rerun(lesson_01.test_half_close_with_much_still_owed,
                                             "End of stream and errors")


@see("Edge-triggered: drain to EAGAIN")
def test_descriptor_limit_flood(start_server, story):
    flood_past_descriptor_limit(start_server, story)


@see("Edge-triggered: drain to EAGAIN")
def test_reads_drain_to_eagain(server):
    client = server.connect()
    burst = patterned(3 * READ_SIZE)
    with server.frozen():
        client.send(burst)
        client.expect_delivered()
    client.expect(burst)
    client.send(b"and one more line\n")
    client.expect(b"and one more line\n")


@see("Edge-triggered: drain to EAGAIN")
def test_accept_drains_the_backlog(server, story):
    with server.frozen():
        with story.summarized("20 clients connected, and each sent a line"):
            clients = [server.connect() for _ in range(20)]
            for client in clients:
                client.send(f"{client.name} is in the queue\n".encode())
    with story.summarized("each client got its line back"):
        for client in clients:
            client.expect(f"{client.name} is in the queue\n".encode())


@see("Step 1: changes ride with the wait")
def test_more_events_than_one_batch_holds(server, story):
    """300 clients wait, each with a line sent: the server accepts them all at once and registers them in one
    wait, whose eventlist (one entry per change) brings back more events than the server's batch of 256 holds.
    Those that do not fit are handed out by the next wait(): edge-triggered, they are not reported again."""
    with server.frozen():
        with story.summarized("300 clients connected, and each sent a line"):
            clients = [server.connect() for _ in range(300)]
            for client in clients:
                client.send(f"{client.name} is in the queue\n".encode())
    with story.summarized("each of the 300 clients got its line back"):
        for client in clients:
            client.expect(f"{client.name} is in the queue\n".encode())
