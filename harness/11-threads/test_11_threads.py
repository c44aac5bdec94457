"""Lesson 11: a factoring server on worker threads that share one kqueue (program `workers`), and the same server
with one kqueue and one listening socket per thread (program `reuseport`).

A request is a number on a line; the answer is "N: p1 p2 ...". The work is slow on purpose: a prime near 10^16
takes a few hundred milliseconds, one near 10^18 seconds. The tests use that time: a request that arrives while a
thread is busy with another from the same connection is exactly when two threads could end up serving one
connection. Every test here also runs against a ThreadSanitizer build (the `threads` mark: ./kqlab test).
"""
import signal
import time

import pytest

from vocabulary import SMALL_BUFFER, eventually, largest_send_buffer, seconds, see

pytestmark = pytest.mark.threads

BOTH = pytest.mark.parametrize("program_name", ["workers", "reuseport"])

SLOW = 10000000000000061         # prime: a few hundred milliseconds of trial division
VERY_SLOW = 1000000000000000003  # prime: seconds


def answer(number: int) -> bytes:
    """The server's answer for a number: its prime factors, smallest first (naive, for the small numbers here)."""
    factors, n, divisor = [], number, 2
    while divisor * divisor <= n:
        while n % divisor == 0:
            factors.append(divisor)
            n //= divisor
        divisor += 1
    if n > 1:
        factors.append(n)
    return f"{number}: {' '.join(map(str, factors))}\n".encode()


def prime(number: int) -> bytes:
    return f"{number}: {number}\n".encode()


def settled_descriptors(server, story) -> int:
    """The server's open descriptors once one client has come, been answered and gone: what kqlab's Linux layer
    opens on first use (a timer's descriptor) is counted in, so that only what a connection leaves behind shows."""
    with story.summarized("a first client sent a number, got its answer and closed"):
        client = server.connect()
        client.send(b"12\n")
        client.expect(answer(12))
        client.close()
    server.wait_until_quiet()
    return server.open_descriptors()


def wait_until_working(server, story, what: str) -> None:
    """Waits until the server has spent 50 ms of CPU since now: a thread is in the middle of a slow request."""
    before = server.cpu_seconds()
    if not eventually(lambda: server.cpu_seconds() - before >= 0.05 or not server.running(), seconds(5)):
        story.fail(f"the server to start working on {what}", "it used no CPU for 5 s")
    story.step(f"the server was busy working on {what}")


@pytest.fixture
def program_name() -> str:
    return "workers"


@BOTH
@see("The program you are finishing")
def test_answers_every_line_in_order(server):
    client = server.connect()
    client.send(b"360\n12\r\nforty-two\n" + str(2**64 - 1).encode() + b"\n")
    client.expect(answer(360) + answer(12))
    client.expect(b"error: 'forty-two' is not a whole number from 2 to 18446744073709551615\n")
    client.expect(b"18446744073709551615: 3 5 17 257 641 65537 6700417\n")
    client.send(b"97")
    client.shut_write()
    client.expect(prime(97))
    client.expect_close()
    rude = server.connect()
    rude.send(b"1" * 100)
    rude.expect(b"error: a request is a number on a line of its own, at most 64 characters\n")
    rude.expect_close()


@see("Why EV_DISPATCH")
def test_one_thread_per_connection(start_server, story):
    server = start_server("--threads", "4")
    client = server.connect()
    for _ in range(3):
        client.send(f"{SLOW}\n".encode())
        wait_until_working(server, story, f"{SLOW}")
        # These arrive while a thread is still working on SLOW for this connection: they must wait for it.
        client.send(b"12\n")
        client.send(b"360\n")
        client.expect(prime(SLOW) + answer(12) + answer(360), within=seconds(10))
    client.shut_write()
    client.expect_close(within=seconds(5))  # and not one answer twice



@see("Step 2: re-enable when done")
def test_answers_wait_for_room(start_server, story):
    """A client sends many requests and reads none of the answers until the server cannot write more: the thread
    that met a full socket leaves the connection waiting for room to write (EVFILT_WRITE), and the answers go on
    once the client reads."""
    server = start_server("--threads", "2")
    client = server.connect(receive_buffer=SMALL_BUFFER)
    number = 2**63  # 63 factors of 2: a long answer, found at once
    requests = f"{number}\n".encode() * ((2 * largest_send_buffer() + (1 << 20)) // len(answer(number)))
    sent = client.send_until_stuck(requests)
    server.wait_until_quiet()
    # Waiting for room is sleeping in kevent(): a connection left waiting for input it cannot take (it reads no
    # more while kMostUnsent waits) is reported again and again, and the server spins.
    server.expect_idle(0.5)
    owed = sent.count(b"\n")
    client.expect(answer(number) * owed, within=seconds(30))
    story.step(f"{client.name} got the {owed} answers it was owed")
    rest = requests[len(sent):]
    if rest:
        client.send(rest)
        client.expect(answer(number) * (rest.count(b"\n")), within=seconds(30))

@see("One queue, many threads")
def test_a_slow_request_delays_no_other_client(start_server, story):
    server = start_server("--threads", "4")
    busy, other = server.connect(), server.connect()
    busy.send(f"{VERY_SLOW}\n".encode())
    wait_until_working(server, story, f"{VERY_SLOW}")
    other.send(b"360\n")
    other.expect(answer(360), within=seconds(1))


@see("Step 3: closing a connection another thread holds")
def test_timeout_closes_a_connection_being_served(start_server, story):
    server = start_server("--threads", "2", "--timeout-ms", "300")
    baseline = settled_descriptors(server, story)
    client = server.connect()
    client.send(f"{VERY_SLOW}\n".encode())
    # The timeout fires on the other thread while the first is still dividing: the client is cut off, the work
    # abandoned, and the connection freed only when the busy thread lets go of it.
    left = client.read_until_close(within=seconds(3))
    if left:
        story.fail("no answer before the timeout closes the connection", repr(left))
    other = server.connect()
    other.send(b"12\n")
    other.expect(answer(12))
    other.close()
    server.expect_descriptors(baseline, within=seconds(5))
    # And the thread that was dividing let go of the connection without touching freed memory: a sanitizer's
    # report takes the server a moment to write, using CPU, and then ends it.
    server.expect_idle(0.5)



@see("Step 2: re-enable when done")
def test_busy_connection_outlives_the_timeout(start_server, story):
    """The timeout counts from the last request finished, not from the connection's start: a client that keeps
    asking is never cut off."""
    server = start_server("--threads", "2", "--timeout-ms", "400")
    client = server.connect()
    with story.summarized("a client sent a number every 100 ms for 1.2 s, three times the timeout of 400 ms, "
                          "and got every answer"):
        for number in range(2, 14):
            client.send(f"{number}\n".encode())
            client.expect(answer(number))
            time.sleep(0.1)

@BOTH
@see("Step 3: closing a connection another thread holds")
def test_no_descriptor_leak(start_server, program_name, story):
    # One thread for the queue-per-thread server: on Linux each queue's first timer costs kqlab's layer a
    # descriptor of its own, and which queues the warm-up client reaches is the kernel's choice.
    server = start_server("--threads", "1" if program_name == "reuseport" else "4")
    baseline = settled_descriptors(server, story)
    with story.summarized("20 clients each sent a number, got its answer and closed"):
        for number in range(2, 22):
            client = server.connect()
            client.send(f"{number}\n".encode())
            client.expect(answer(number))
            client.close()
    silent = server.connect()
    silent.reset()
    server.expect_descriptors(baseline, within=seconds(5))


@BOTH
@see("The program you are finishing")
def test_no_spinning_while_idle(server):
    clients = [server.connect() for _ in range(3)]
    clients[0].send(b"12\n")
    clients[0].expect(answer(12))
    server.expect_idle(1.0)


@BOTH
@see("Step 4: stopping the workers")
def test_sigterm_stops_every_worker(start_server):
    server = start_server("--threads", "4")
    clients = [server.connect() for _ in range(3)]
    for client in clients:
        client.send(b"12\n")
        client.expect(answer(12))
    server.send_signal(signal.SIGTERM)
    server.expect_exit(0, within=seconds(5))
