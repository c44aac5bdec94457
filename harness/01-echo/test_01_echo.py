"""Lesson 01: an echo server on kqueue. Every client gets back exactly what it sent, in order, however many clients
there are, however slowly they read, and whatever the others do."""
import subprocess

from vocabulary import (SMALL_BUFFER, failed_registration_is_not_ignored, overflowing_payload, patterned, see,
                        seconds)

# A connection that stays open after its end was reported: the cause may be the step that closes, not the test's.
CLOSE_SECTION = "Step 5: close, and stale events"


@see("The program you are finishing")
def test_bad_arguments_are_refused(program, story):
    for arguments in (["--port", "65536"], ["--port", "http"], ["--host", "not-an-address"], ["--colour"]):
        story.step(f"ran the server with {' '.join(arguments)}")
        done = subprocess.run([program, *arguments], capture_output=True, text=True, timeout=seconds(10))
        if done.returncode <= 0 or not done.stderr.strip() or "listening on" in done.stdout:
            story.fail("a message on stderr and a nonzero exit status, without listening",
                       f"status {done.returncode}, stdout {done.stdout.strip()!r}, stderr {done.stderr.strip()!r}")
        if "Sanitizer" in done.stderr or "runtime error" in done.stderr:
            story.fail("a message, not a crash", done.stderr.strip())


@see("How the pieces fit")
def test_one_client(server):
    client = server.connect()
    client.send(b"hello, kqueue\n")
    client.expect(b"hello, kqueue\n")
    client.send(b"a line in ")
    client.send(b"two pieces\n")
    client.expect(b"a line in two pieces\n")


@see("Step 2: accept every waiting client")
def test_fifty_interleaved_clients(server, story):
    with story.summarized("50 clients connected"):
        clients = [server.connect() for _ in range(50)]
    with server.frozen():
        with story.summarized("each client sent its first line"):
            for client in clients:
                client.send(f"{client.name}: first\n".encode())
    with story.summarized("each client sent its second line, in the reverse order"):
        for client in reversed(clients):
            client.send(f"{client.name}: second\n".encode())
    with story.summarized("each client sent its third line in two pieces, the other clients' pieces in between"):
        for client in clients:
            client.send(f"{client.name}: thi".encode())
        for client in clients:
            client.send(b"rd\n")
    with story.summarized("each client got its own three lines back"):
        for client in clients:
            client.expect(f"{client.name}: first\n{client.name}: second\n{client.name}: third\n".encode())


@see("Step 2: accept every waiting client")
def test_slow_reader_delays_nobody(server):
    slow = server.connect(receive_buffer=SMALL_BUFFER)
    sent = slow.send_until_stuck(overflowing_payload())
    other = server.connect()
    other.send(b"am I stuck behind the slow reader?\n")
    other.expect(b"am I stuck behind the slow reader?\n")
    slow.expect(sent, within=seconds(30))


@see("Step 3: read, and what EV_EOF means")
def test_eof_with_pending_data(server):
    client = server.connect()
    with server.frozen():
        client.send(b"the last words\n")
        client.shut_write()
    client.expect(b"the last words\n")
    client.expect_close()


@see("Step 3: read, and what EV_EOF means")
def test_half_close_with_much_still_owed(server):
    """A client that sends a lot, then half-closes, still reads: the end of its stream (read() returning 0, or
    EV_EOF with nothing left to read) is not the end of what the server owes it. With a small receive buffer the
    client, reading nothing until it has sent all, holds back most of the echo: when the server meets the end of the
    stream, megabytes are still owed. Until the client reads again, the server has nothing it can do, and sleeps:
    a finished client's level-triggered EV_EOF, still registered, would fire on every wait."""
    client = server.connect(receive_buffer=SMALL_BUFFER)
    sent = client.send_until_stuck(patterned(10 << 20))
    client.shut_write()
    server.expect_idle(window=seconds(1))
    client.expect(sent, within=seconds(30))
    client.expect_close(within=seconds(5))


@see("Step 1: register, and read the receipt")
def test_failed_registration_is_not_ignored(start_server, story):
    """A registration that fails must stop the server (saying which change failed) or be handled (here: the client
    closed); ignored, the client waits forever for a server that will never hear it. On a working machine no
    registration fails, so this test makes the first client's fail (the second EVFILT_READ added: the first is the
    listening socket's), as a kernel out of memory for knotes would: see failed_registration_is_not_ignored."""
    failed_registration_is_not_ignored(start_server, story, "EVFILT_READ:ENOMEM:2", "the first client's EVFILT_READ")


@see("Step 4: write back, and partial writes")
def test_partial_writes(server):
    client = server.connect(receive_buffer=SMALL_BUFFER)
    sent = client.send_until_stuck(overflowing_payload())
    # Only then read: a server that never asks to hear when it may write again is stuck by now. Read sooner, and
    # events for its last input could still arrive to carry its output out.
    server.wait_until_quiet()
    client.expect(sent, within=seconds(30))
    client.send(b"and after all that, one more line\n")
    client.expect(b"and after all that, one more line\n")


@see("Step 4: write back, and partial writes")
def test_no_spinning_while_idle(server):
    busy = server.connect(receive_buffer=SMALL_BUFFER)
    sent = busy.send_until_stuck(overflowing_payload())
    busy.expect(sent, within=seconds(30))
    quiet = server.connect()
    quiet.send(b"ping\n")
    quiet.expect(b"ping\n")
    server.expect_idle(window=seconds(1))


@see("When a client vanishes")
def test_vanishing_client_disturbs_nobody(server):
    steady = server.connect()
    steady.send(b"before\n")
    steady.expect(b"before\n")
    leaver = server.connect(receive_buffer=SMALL_BUFFER)
    leaver.send_until_stuck(overflowing_payload())
    leaver.wait_readable()
    leaver.reset()
    steady.send(b"after\n")
    steady.expect(b"after\n")
    newcomer = server.connect()
    newcomer.send(b"hello\n")
    newcomer.expect(b"hello\n")


@see("Step 5: close, and stale events")
def test_no_descriptor_leak(server, story):
    at_start = server.open_descriptors()
    story.step(f"the server had {at_start} open descriptors")
    with story.summarized("200 clients came and went, 20 at a time: each connected, sent a line, got it back "
                          "and closed"):
        for _ in range(10):
            clients = [server.connect() for _ in range(20)]
            for client in clients:
                client.send(f"{client.name} was here\n".encode())
            for client in clients:
                client.expect(f"{client.name} was here\n".encode())
                client.close()
    server.expect_descriptors(at_most=at_start, within=seconds(5))
