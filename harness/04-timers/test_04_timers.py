"""Lesson 04: timers inside the event loop. AFTER and EVERY answer on time without holding anyone up, a connection
that stays silent is closed on time, and a connection that goes takes its timers with it.

Timing: a timer never fires early, so a reply may never come before its deadline (give or take EARLY, for the
clocks of two processes); it may come late by up to LATE, a margin for a busy machine. Deadlines that a test
puts in order are further apart than the few milliseconds a timer may lag; the lateness allowed is a separate,
wider margin, since a machine that is late is late for all of them alike.
"""
import subprocess
import time

from vocabulary import seconds, see, seeded_random

EARLY = 0.005
LATE = seconds(0.5)
GOODBYE = b"idle timeout, goodbye\n"


def arrived(at: float, since: float) -> str:
    return f"{at - since:.3f} s"


def descriptors_with_a_timer(server, story):
    """A client that stays for the whole test, its first timer fired, and the count of the server's descriptors
    then: the first timer may give the queue a descriptor of its own (compat's timerfd), which stays."""
    stayer = server.connect()
    stayer.send(b"AFTER 0 first timer\n")
    stayer.expect(b"first timer\n")
    count = server.open_descriptors()
    story.step(f"the server had {count} open descriptors")
    return stayer, count


@see("The program you are finishing")
def test_bad_arguments_are_refused(program, story):
    for arguments in (["--idle-ms", "soon"], ["--idle-ms", "0"], ["--idle-ms", "-5"], ["--idle-ms"],
                      ["--idle-ms", "99999999999"], ["--port", "65536"], ["--colour"]):
        story.step(f"ran the server with {' '.join(arguments)}")
        done = subprocess.run([program, *arguments], capture_output=True, text=True, timeout=seconds(10))
        if done.returncode <= 0 or not done.stderr.strip() or "listening on" in done.stdout:
            story.fail("a message on stderr and a nonzero exit status, without listening",
                       f"status {done.returncode}, stdout {done.stdout.strip()!r}, stderr {done.stderr.strip()!r}")


@see("The program you are finishing")
def test_one_client(server):
    client = server.connect()
    client.send(b"hello\n")
    client.expect(b"hello\n")
    client.send(b"AFTER 0 at once\nAFTER 200 later\nEVERY 50 3\nAFTER x\nEVERY 10\n")
    client.expect(b"error: AFTER wants a delay in ms (0 to 86400000), a space and a text\n"
                  b"error: EVERY wants a period in ms (1 to 86400000) and a count (1 to 1000000000)\n"
                  b"at once\ntick 1/3\ntick 2/3\ntick 3/3\nlater\n", within=seconds(3))
    client.expect_silence(0.3)


@see("Step 1: arm a timer")
def test_after_replies_in_deadline_order(server, story):
    rng = seeded_random(story)
    # 100 deadlines, at least 20 ms apart, from 100 ms to 2.2 s, asked for in random order.
    delays = [20 * slot for slot in rng.sample(range(5, 111), 100)]
    client = server.connect()
    sent_at = time.monotonic()
    client.send(b"".join(f"AFTER {delay} reply {delay}\n".encode() for delay in delays))
    lines = client.receive_lines(100, within=seconds(2.2) + LATE + seconds(1))
    expected = [f"reply {delay}".encode() for delay in sorted(delays)]
    got = [line for _, line in lines]
    if sorted(got) != sorted(expected):
        missing = sorted(set(expected) - set(got))[:5]
        story.fail("one reply per AFTER, each with its own text", f"{len(set(got))} different replies; missing "
                   f"{[line.decode() for line in missing]}, among {[line.decode() for line in got[:8]]}...")
    for index, ((at, line), want) in enumerate(zip(lines, expected)):
        if line != want:
            story.fail(f"the replies in the order of their deadlines: reply {index + 1} should have been "
                       f"{want.decode()!r}", f"{line.decode()!r}, at {arrived(at, sent_at)} (the replies came in "
                       f"this order: {', '.join(l.decode() for _, l in lines[max(0, index - 3):index + 3])}...)")
        delay = int(line.split()[1]) / 1000
        if not delay - EARLY <= at - sent_at <= delay + LATE:
            story.fail(f"{line.decode()!r} between {delay:.3f} s and {delay + LATE:.3f} s after the request",
                       f"it came after {arrived(at, sent_at)}")
    story.step("each reply came in deadline order, on time")


@see("Timers are events too")
def test_echo_stays_responsive_while_timers_pend(server, story):
    waiter = server.connect()
    waiter.send(b"".join(f"AFTER {1000 + 5 * i} later {i}\n".encode() for i in range(100)) + b"EVERY 10 100\n")
    talker = server.connect()
    with story.summarized("client 2 sent 10 lines, one at a time, each echoed within 0.5 s"):
        for i in range(10):
            talker.send(f"still there? {i}\n".encode())
            talker.expect(f"still there? {i}\n".encode(), within=seconds(0.5))
    lines = waiter.receive_lines(200, within=seconds(1.5) + LATE + seconds(1))
    got = sorted(line for _, line in lines)
    expected = sorted([f"later {i}".encode() for i in range(100)] + [f"tick {i}/100".encode() for i in range(1, 101)])
    if got != expected:
        story.fail("client 1 receives its 100 replies and its 100 ticks", f"{len(lines)} lines, not those")


@see("Step 2: when a timer fires")
def test_every_catches_up_after_a_stall(server, story):
    client = server.connect()
    sent_at = time.monotonic()
    client.send(b"EVERY 100 20\n")
    client.expect(b"tick 1/20\ntick 2/20\n", within=seconds(1))
    with server.frozen():
        time.sleep(1.0)  # the stall itself: the timer expires about 10 times while the server cannot run
        story.step("waited 1 s: about 10 ticks came due while the server was stopped")
    lines = client.receive_lines(18, within=seconds(3))
    for number, (at, line) in enumerate(lines, 3):
        if line != f"tick {number}/20".encode():
            story.fail(f"'tick {number}/20'", f"{line.decode()!r}")
    last = lines[-1][0] - sent_at
    if last > 2.0 + LATE:
        story.fail(f"the 20th tick 2 s after the request, at most {LATE:g} s late: a periodic timer does not "
                   "drift, and the ticks missed during the stall are owed at once", f"it came after {last:.3f} s")
    story.step(f"tick 20/20 came after {last:.3f} s")
    client.expect_silence(0.3)


@see("Step 3: idle connections")
def test_idle_connection_closed_on_time(start_server, story):
    idle = seconds(0.6)
    server = start_server("--idle-ms", str(round(idle * 1000)))
    quiet = server.connect()
    connected_at = time.monotonic()  # before the server accepts, and starts counting
    quiet.expect(GOODBYE, within=idle + seconds(3))
    closed_after = time.monotonic() - connected_at
    quiet.expect_close()
    if not idle - EARLY <= closed_after <= idle + LATE:
        story.fail(f"the goodbye {idle:g} s after client 1 connected, and at most {LATE:g} s later",
                   f"it came after {closed_after:.3f} s")
    newcomer = server.connect()
    newcomer.send(b"and me?\n")
    newcomer.expect(b"and me?\n")


@see("Step 3: idle connections")
def test_activity_postpones_idle_close(start_server, story):
    idle = seconds(0.8)
    server = start_server("--idle-ms", str(round(idle * 1000)))
    client = server.connect()
    pause = idle * 3 / 8  # well inside the idle time, even for a test that is slow to send its next line
    with story.summarized(f"client 1 sent a line every {pause:g} s, 5 times (over twice the idle time), each "
                          "echoed"):
        for i in range(5):
            client.expect_silence(pause)
            spoke_at = time.monotonic()  # before the server hears it, and starts counting again
            client.send(f"ping {i}\n".encode())
            client.expect(f"ping {i}\n".encode())
    client.expect(GOODBYE, within=idle + seconds(3))
    closed_after = time.monotonic() - spoke_at
    client.expect_close()
    if not idle - EARLY <= closed_after <= idle + LATE:
        story.fail(f"the goodbye {idle:g} s after client 1 last spoke, and at most {LATE:g} s later",
                   f"it came after {closed_after:.3f} s")


@see("Step 3: idle connections")
def test_idle_timer_rearmed_for_what_is_left(start_server, story):
    # One line just after connecting, then silence: the idle timer armed at the connection fires nearly idle_
    # after the line, finds the client silent for only a moment, and must be armed for what is left (idle_ minus
    # that moment), not for a whole idle_ again, which would say goodbye almost twice as late.
    idle = seconds(0.8)
    server = start_server("--idle-ms", str(round(idle * 1000)))
    client = server.connect()
    client.expect_silence(seconds(0.05))
    spoke_at = time.monotonic()  # before the server hears it, and starts counting again
    client.send(b"just one line\n")
    client.expect(b"just one line\n")
    client.expect(GOODBYE, within=idle + seconds(3))
    closed_after = time.monotonic() - spoke_at
    client.expect_close()
    if not idle - EARLY <= closed_after <= idle + LATE:
        story.fail(f"the goodbye {idle:g} s after client 1's only line (the idle timer, firing before that, "
                   f"re-armed for what was left of {idle:g} s), and at most {LATE:g} s later",
                   f"it came after {closed_after:.3f} s")


@see("Step 4: when a connection goes, its timers go")
def test_disconnect_with_timers_pending(server, story):
    _, at_start = descriptors_with_a_timer(server, story)
    closer = server.connect()
    closer.send(b"AFTER 400 not for you\nEVERY 300 1000\nAFTER 100000 much later\nping\n")
    closer.expect(b"ping\n")
    resetter = server.connect()
    resetter.send(b"AFTER 500 not for you either\nEVERY 300 1000\nping\n")
    resetter.expect(b"ping\n")
    closer.close()
    resetter.reset()
    # The newcomers get the descriptor numbers the leavers had: a timer that outlived its connection would write
    # to them, or read a freed Connection.
    newcomers = [server.connect() for _ in range(2)]
    for newcomer in newcomers:
        newcomer.send(b"hello\n")
        newcomer.expect(b"hello\n")
    newcomers[0].expect_silence(1.0)  # past every deadline the leavers left behind, and three ticks
    newcomers[1].expect_silence(0.0)
    for newcomer in newcomers:
        newcomer.send(b"still here\n")
        newcomer.expect(b"still here\n")
        newcomer.close()
    server.expect_descriptors(at_most=at_start, within=seconds(5))


@see("Who owns a timer: udata and lifetimes")
def test_timer_and_close_in_one_batch(server, story):
    with story.summarized("5 clients each sent 'AFTER 200 too late' and 'ping', and got the ping back"):
        leavers = [server.connect() for _ in range(5)]
        for leaver in leavers:
            leaver.send(b"AFTER 200 too late\nping\n")
        for leaver in leavers:
            leaver.expect(b"ping\n")
    with server.frozen():
        with story.summarized("the 5 clients vanished (reset)"):
            for leaver in leavers:
                leaver.reset()
        time.sleep(0.4)  # the timers come due while the server is stopped: one batch holds the resets and them
        story.step("waited 0.4 s: the 5 timers came due, in the same batch as the resets")
    newcomer = server.connect()
    newcomer.send(b"anyone home?\n")
    newcomer.expect(b"anyone home?\n")


@see("Step 4: when a connection goes, its timers go")
def test_no_timer_or_descriptor_left_behind(server, story):
    _, at_start = descriptors_with_a_timer(server, story)
    short = b"AFTER 1 a\n" * 20 + b"EVERY 1 5\n" * 5
    with story.summarized("10 clients each asked for 20 'AFTER 1 a' and 5 'EVERY 1 5', got all 45 lines, and "
                          "closed"):
        for _ in range(10):
            client = server.connect()
            client.send(short)
            got = sorted(line for _, line in client.receive_lines(45))
            expected = sorted([b"a"] * 20 + [f"tick {i}/5".encode() for i in range(1, 6)] * 5)
            if got != expected:
                story.fail("20 'a' and 5 of each tick", f"{got}")
            client.expect_silence(0.05)
            client.close()
    long = b"EVERY 1 1000000000\n" * 5 + b"AFTER 100000 never\nping\n"
    with story.summarized("10 clients each asked for 5 'EVERY 1 1000000000' and 'AFTER 100000 never', got their "
                          "ping back, and closed"):
        for _ in range(10):
            client = server.connect()
            client.send(long)
            client.expect(b"ping\n")
            client.close()
    server.expect_descriptors(at_most=at_start, within=seconds(5))
    server.expect_idle(window=seconds(1))
