"""Lesson 12: a proxy. Each test starts its own upstream server on loopback (upstreams.py), then the proxy in front
of it, and checks what a client of the proxy sees, what the upstream sees, and what the proxy holds meanwhile:
its memory and its descriptors."""
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from upstreams import Breaker, Echo, Firehose, FullBacklog, Holder, Responder, refused_port
from vocabulary import SMALL_BUFFER, eventually, patterned, see, seconds

BUFFER = 16384  # --buffer for the flow-control tests: what the proxy may hold per direction
FLOOD = 48 << 20  # more than every socket buffer on the way can hold, however far the kernels grow them
GROWTH = 8 << 20  # what the proxy's resident memory may grow by while a flood waits: its buffers, and slack


@pytest.fixture
def upstreams():
    """Starts upstream servers for the test (upstreams(Echo()) returns it) and stops them after it."""
    started = []

    def keep(upstream):
        started.append(upstream)
        return upstream

    yield keep
    for upstream in started:
        upstream.stop()


def resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return int(subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True).stdout) * 1024


def expect_accepted(upstream, count: int, story) -> None:
    if not eventually(lambda: upstream.accepted() >= count, seconds(5)):
        story.fail(f"the proxy to connect to the upstream for each of {count} clients within {seconds(5):g} s",
                   f"the upstream accepted {upstream.accepted()} connections")
    story.step(f"the upstream accepted {count} connection{'s' if count > 1 else ''} from the proxy")


def arrives(count, total: int, stall: float) -> bool:
    """Waits while count() grows towards `total`; False once it has not grown for `stall` seconds."""
    last, seen = time.monotonic(), count()
    while seen < total:
        if time.monotonic() - last > stall:
            return False
        time.sleep(0.02)
        if (now := count()) != seen:
            last, seen = time.monotonic(), now
    return True


@see("The program you are finishing")
def test_bad_arguments_are_refused(program, story):
    for arguments in ([], ["--upstream", "nowhere"], ["--upstream", "127.0.0.1:"], ["--upstream", "127.0.0.1:70000"],
                      ["--upstream", "127.0.0.1:80", "--buffer", "10"],
                      ["--upstream", "127.0.0.1:80", "--connect-timeout-ms", "0"], ["--colour"]):
        story.step(f"ran the proxy with {' '.join(arguments) or 'no arguments'}")
        done = subprocess.run([program, *arguments], capture_output=True, text=True, timeout=seconds(10))
        if done.returncode <= 0 or not done.stderr.strip() or "listening on" in done.stdout:
            story.fail("a message on stderr and a nonzero exit status, without listening",
                       f"status {done.returncode}, stdout {done.stdout.strip()!r}, stderr {done.stderr.strip()!r}")


@see("The program you are finishing")
def test_bytes_flow_both_ways(start_server, upstreams, story):
    echo = upstreams(Echo())
    proxy = start_server("--upstream", echo.address)
    clients = [proxy.connect() for _ in range(3)]
    for number, client in enumerate(clients):
        client.send(f"hello from {number}\n".encode())
    for number, client in enumerate(clients):
        client.expect(f"hello from {number}\n".encode())
    big = patterned(3 << 20)
    clients[0].send(big)
    clients[0].expect(big, within=seconds(10))
    clients[1].send(bytes(range(256)) * 4)
    clients[1].expect(bytes(range(256)) * 4)


@see("Step 1: connecting without blocking")
def test_refused_upstream_is_reported(start_server, story):
    port = refused_port()
    proxy = start_server("--upstream", f"127.0.0.1:{port}")
    at_start = None
    for _ in range(3):
        client = proxy.connect()
        line = client.read_until_close(within=seconds(5))
        if not re.fullmatch(rf"proxy: cannot connect to upstream 127\.0\.0\.1:{port}: .*refused.*\n", line.decode(
                "utf-8", "replace"), re.IGNORECASE):
            story.fail(f"one line, 'proxy: cannot connect to upstream 127.0.0.1:{port}: Connection refused', then "
                       f"the close", f"{line!r}, then the close")
        # Counted once the first pair is gone: a kqueue layer may open descriptors of its own on first use.
        at_start = at_start or proxy.open_descriptors()
    proxy.expect_descriptors(at_most=at_start, within=seconds(5))


@see("Step 2: a deadline for connect()")
def test_silent_upstream_times_out(start_server, upstreams, story):
    try:
        silent = upstreams(FullBacklog())
    except RuntimeError as why:  # a kernel that completes every handshake (SYN cookies) leaves nothing to time out
        pytest.skip(f"no upstream that never answers can be made on loopback here: {why}")
    story.step("started an upstream whose listening queue is full: a connect() to it gets no answer")
    proxy = start_server("--upstream", silent.address, "--connect-timeout-ms", "300")
    at_start = None
    for _ in range(2):
        client = proxy.connect()
        line = client.read_until_close(within=seconds(3))
        expected = f"proxy: cannot connect to upstream {silent.address}: no answer within 300 ms\n"
        if line.decode("utf-8", "replace") != expected:
            story.fail(f"{expected.strip()!r}, then the close", f"{line!r}, then the close")
        at_start = at_start or proxy.open_descriptors()
    proxy.expect_descriptors(at_most=at_start, within=seconds(5))


@see("Step 3: flow control")
def test_slow_upstream_bounds_what_the_proxy_holds(start_server, upstreams, story):
    holder = upstreams(Holder(reading=False))
    proxy = start_server("--upstream", holder.address, "--buffer", str(BUFFER))
    client = proxy.connect()
    expect_accepted(holder, 1, story)
    before = resident_bytes(proxy.pid)
    sent = client.send_until_stuck(patterned(FLOOD))
    grown = resident_bytes(proxy.pid) - before
    story.step(f"the proxy's resident memory grew by {grown / (1 << 20):.1f} MiB")
    if len(sent) == FLOOD or grown > GROWTH:
        story.fail(f"the proxy to stop reading from the client once {BUFFER} bytes wait for the upstream, which "
                   f"reads nothing: the client stuck well before {FLOOD >> 20} MiB, and the proxy's memory grown by "
                   f"less than {GROWTH >> 20} MiB",
                   f"the proxy took {len(sent)} bytes, and its memory grew by {grown / (1 << 20):.1f} MiB")
    proxy.expect_idle(window=seconds(0.5))
    holder.start_reading()
    story.step("the upstream began to read")
    if not arrives(lambda: len(holder.received[0]), len(sent), stall=seconds(3)):
        story.fail(f"all {len(sent)} bytes the proxy took to reach the upstream once it reads",
                   f"{len(holder.received[0])} bytes reached it, then nothing more for {seconds(3):g} s")
    if holder.received[0] != sent:
        story.fail("the bytes to reach the upstream as the client sent them", "different bytes")
    story.step("every byte the client sent reached the upstream, in order")


@see("Step 3: flow control")
def test_slow_client_bounds_what_the_proxy_holds(start_server, upstreams, story):
    firehose = upstreams(Firehose(FLOOD))
    proxy = start_server("--upstream", firehose.address, "--buffer", str(BUFFER))
    before = resident_bytes(proxy.pid)
    client = proxy.connect(receive_buffer=SMALL_BUFFER)
    expect_accepted(firehose, 1, story)
    if not eventually(lambda: 0 in firehose.stuck and firehose.stuck[0].is_set(), seconds(30)):
        story.fail("the upstream to be unable to send more while the client reads nothing", "it kept sending")
    taken = firehose.sent[0]
    grown = resident_bytes(proxy.pid) - before
    story.step(f"the upstream sent as fast as it could while the client read nothing: the proxy took {taken} "
               f"bytes, and its resident memory grew by {grown / (1 << 20):.1f} MiB")
    if taken == FLOOD or grown > GROWTH:
        story.fail(f"the proxy to stop reading from the upstream once {BUFFER} bytes wait for the client: the "
                   f"upstream stuck well before {FLOOD >> 20} MiB, and the proxy's memory grown by less than "
                   f"{GROWTH >> 20} MiB", f"it took {taken} bytes, and its memory grew by {grown / (1 << 20):.1f} MiB")
    proxy.expect_idle(window=seconds(0.5))
    client.expect(patterned(taken), within=seconds(30))


@see("Step 4: passing a half-close on")
def test_request_then_eof_gets_the_whole_reply(start_server, upstreams, story):
    reply_size = 3 << 20
    responder = upstreams(Responder(reply_size))
    proxy = start_server("--upstream", responder.address)
    at_start = None
    for size in (0, 100, 300000):
        client = proxy.connect()
        client.send(patterned(size))
        client.shut_write()
        client.expect(Responder.header(patterned(size)) + patterned(reply_size), within=seconds(20))
        client.expect_close(within=seconds(5))
        at_start = at_start or proxy.open_descriptors()
    proxy.expect_descriptors(at_most=at_start, within=seconds(5))


@see("Step 5: when one side vanishes")
def test_client_vanishing_closes_upstream(start_server, upstreams, story):
    holder = upstreams(Holder(reading=True))
    proxy = start_server("--upstream", holder.address)
    first = proxy.connect()
    expect_accepted(holder, 1, story)
    first.close()
    if not eventually(lambda: 0 in holder.ended, seconds(5)):
        story.fail("the upstream to see its connection end when the client closes", "it stayed open")
    at_start = proxy.open_descriptors()  # now: a kqueue layer may open descriptors of its own on first use
    story.step(f"the proxy had {at_start} open descriptors")
    clients = [proxy.connect() for _ in range(10)]
    expect_accepted(holder, 11, story)
    with story.summarized("each of 10 clients sent a line; 5 then reset their connections and 5 closed them"):
        for client in clients:
            client.send(b"hello\n")
        eventually(lambda: all(len(holder.received.get(n, b"")) == 6 for n in range(1, 11)), seconds(5))
        for client in clients[:5]:
            client.reset()
        for client in clients[5:]:
            client.close()
    if not eventually(lambda: len(holder.ended) == 11, seconds(5)):
        story.fail("the upstream to see all 10 of its connections end", f"{len(holder.ended) - 1} ended")
    ends = [holder.ended[number] for number in range(1, 11)]
    story.step(f"the upstream saw its connections end: {ends.count('reset')} reset, {ends.count('EOF')} in order")
    if ends.count("reset") != 5:
        story.fail("the upstream to see 5 of its connections reset, as their clients reset theirs, and 5 end in "
                   "order", f"{ends.count('reset')} reset and {ends.count('EOF')} ended in order")
    proxy.expect_descriptors(at_most=at_start, within=seconds(5))


@see("Step 5: when one side vanishes")
def test_upstream_reset_reaches_the_client(start_server, upstreams, story):
    breaker = upstreams(Breaker(100000))
    proxy = start_server("--upstream", breaker.address)
    client = proxy.connect()
    client.send(b"GET something\n")
    client.read_until_close(within=seconds(5))
    if client.closed_by_server != "reset":
        story.fail("the upstream's reset passed on to the client as a reset (a cut-off reply must not look "
                   "complete)", f"the proxy {client.closed_by_server} the connection in order")


@see("Out of descriptors")
def test_descriptor_limit(start_server, upstreams, story):
    echo = upstreams(Echo())
    # A pair costs two descriptors, so which call meets the limit first, accept() or the upstream's socket(),
    # depends on whether the proxy's own descriptors are odd or even in number: one limit of each parity tries both.
    for limit in (32, 33):
        proxy = start_server("--upstream", echo.address, descriptor_limit=limit)
        burst_at_the_limit(proxy, story)


def burst_at_the_limit(proxy, story) -> None:
    first = proxy.connect()
    first.send(b"first\n")
    first.expect(b"first\n")
    first.close()
    proxy.wait_until_quiet()
    at_start = proxy.open_descriptors()
    story.step(f"the proxy had {at_start} open descriptors")
    served, told = 0, 0
    clients = []
    with story.summarized("40 clients connected at once, each sent a line and waited for it to come back, or for the "
                          "proxy to say why not and close"):
        for number in range(40):
            client = socket.create_connection((proxy.host, proxy.port), timeout=seconds(5))
            client.sendall(f"hello {number}\n".encode())
            clients.append(client)
        for number, client in enumerate(clients):
            answer = b""
            try:
                while not answer.endswith(b"\n") and (chunk := client.recv(4096)):
                    answer += chunk
            except (socket.timeout, ConnectionResetError) as error:
                story.fail(f"client {number} to get its line back, or one line from the proxy saying why not",
                           f"{answer!r}, then {type(error).__name__}")
            if answer == f"hello {number}\n".encode():
                served += 1
            elif answer.startswith(b"proxy: "):
                told += 1
            else:
                story.fail(f"client {number} to get its line back, or one line from the proxy saying why not",
                           f"{answer!r}")
    story.step(f"{served} clients were served and {told} were told why not")
    if served == 0 or told == 0:
        story.fail("some clients served and the others told why not, at the descriptor limit",
                   f"{served} served, {told} told")
    proxy.expect_idle(window=seconds(0.5))
    for client in clients:
        client.close()
    story.step("every client closed its connection")
    proxy.expect_descriptors(at_most=at_start, within=seconds(5))


@see("The program you are finishing")
def test_sigterm_ends_the_proxy(start_server, upstreams, story):
    echo = upstreams(Echo())
    proxy = start_server("--upstream", echo.address)
    client = proxy.connect()
    client.send(b"ping\n")
    client.expect(b"ping\n")
    proxy.send_signal(signal.SIGTERM)
    proxy.expect_exit(0, within=seconds(5))
