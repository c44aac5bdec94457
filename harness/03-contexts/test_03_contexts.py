"""Lesson 03: contexts. A chat server: each line a client sends reaches every other client, prefixed with the
sender's name, in order; a client that reads slowly delays nobody and gets all it is owed, unless it falls too far
behind; and clients that vanish all at once leave the server healthy."""
from vocabulary import SMALL_BUFFER, Client, overflowing_payload, see, seconds, show

CHUNK = 128 * 1024  # how much the talker sends before the reading clients catch up

# A server that stops on EBADF for one of its changes handed a change for a descriptor it had closed: whichever test
# saw it die, the cause is taught in step 5.
DIAGNOSES = [(r"kevent\(.*\): Bad file descriptor", "Step 5: close now, free later",
              "a change queued for a connection it had closed reached the kernel; the changes queued for a connection "
              "must go when it is closed")]


def name_of(client: Client) -> str:
    """The client's name in the chat: its address, as the server sees it."""
    host, port = client.socket.getsockname()[:2]
    return f"{host}:{port}"


def said(client: Client, *lines: bytes) -> bytes:
    """What the others receive when `client` sends `lines` (each ending with a newline)."""
    return b"".join(name_of(client).encode() + b": " + line for line in lines)


def chat_lines(size: int) -> list[bytes]:
    """About `size` bytes of numbered lines of 1 KiB, so that a lost, repeated or reordered line shows."""
    return [b"line %07d " % number + b"." * 1005 + b"\n" for number in range(size // 1024 + 1)]


def chunks(lines: list[bytes]) -> list[list[bytes]]:
    per_chunk = CHUNK // len(lines[0])
    return [lines[i:i + per_chunk] for i in range(0, len(lines), per_chunk)]


def everyone_hears_hello(clients: list[Client], story) -> None:
    """A line from the first client to all the others: once it has arrived, every client is registered."""
    with story.summarized(f"{name_of(clients[0])} said hello, and the {len(clients) - 1} others heard it"):
        clients[0].send(b"hello\n")
        for other in clients[1:]:
            other.expect(said(clients[0], b"hello\n"))


def flood(talker: Client, reader: Client, lines: list[bytes], story) -> None:
    """`talker` sends `lines`, CHUNK at a time, and `reader` receives each chunk before the next is sent."""
    with story.summarized(f"{talker.name} sent {sum(map(len, lines))} bytes of lines, {CHUNK} at a time, and "
                          f"{reader.name} received each part before the next was sent"):
        for part in chunks(lines):
            talker.send(b"".join(part))
            reader.expect(said(talker, *part), within=seconds(10))


@see("How the pieces fit")
def test_lines_reach_all_others_in_order(server, story):
    with story.summarized("4 clients connected"):
        clients = [server.connect() for _ in range(4)]
    everyone_hears_hello(clients, story)
    for round_number in range(2):
        with story.summarized(f"each client in turn sent line {round_number}, and the 3 others received it"):
            for sender in clients:
                line = f"line {round_number} from {sender.name}\n".encode()
                sender.send(line)
                for other in clients:
                    if other is not sender:
                        other.expect(said(sender, line))
    first, second = clients[:2]
    first.send(b"half of a ")
    second.send(b"whole line\n")
    for other in clients:
        if other is not second:
            other.expect(said(second, b"whole line\n"))
    first.send(b"line, finished\n")
    for other in clients[1:]:
        other.expect(said(first, b"half of a line, finished\n"))
    first.expect_silence(seconds(0.3))  # nobody hears their own lines


@see("Step 4: write what the socket takes, and only then ask for EVFILT_WRITE")
def test_slow_reader_delays_nobody(start_server, story):
    server = start_server("--max-backlog", str(64 << 20))  # room for the whole backlog: this test wants it all
    slow = server.connect(receive_buffer=SMALL_BUFFER)
    talker, other = server.connect(), server.connect()
    everyone_hears_hello([talker, slow, other], story)
    lines = chat_lines(len(overflowing_payload()))  # more than the slow reader's socket buffers hold
    flood(talker, other, lines, story)
    other.send(b"and is the slow one still there?\n")
    talker.expect(said(other, b"and is the slow one still there?\n"))
    story.step(f"{slow.name} started reading")
    slow.expect(said(talker, *lines) + said(other, b"and is the slow one still there?\n"),
                within=seconds(30))


@see("Step 3: an output buffer per connection, and its limit")
def test_too_slow_reader_is_disconnected(start_server, story):
    # A small limit: the slow reader is disconnected a few lines after its socket first refuses a write, in the
    # same loop turn, which is also what catches a server that keeps the queued changes of a closed connection.
    server = start_server("--max-backlog", "4096")
    slow = server.connect(receive_buffer=SMALL_BUFFER)
    talker, other = server.connect(), server.connect()
    everyone_hears_hello([talker, slow, other], story)
    lines = chat_lines(len(overflowing_payload()))  # more than its socket buffers hold
    flood(talker, other, lines, story)
    server.expect_message(rf"{name_of(slow)}\D", f"that says it disconnected {name_of(slow)}", within=seconds(5))
    got = slow.read_until_close(within=seconds(10))
    owed = said(talker, *lines)
    if not owed.startswith(got):
        first = next(i for i, (a, b) in enumerate(zip(got, owed)) if a != b)
        story.fail(f"{slow.name} to receive the start of the chat, intact, before the close",
                   f"a difference at byte {first} of the {len(got)} it received")
    other.send(b"still here\n")
    talker.expect(said(other, b"still here\n"))


@see("Step 4: write what the socket takes, and only then ask for EVFILT_WRITE")
def test_no_spinning_while_output_waits(start_server, story):
    server = start_server("--max-backlog", str(64 << 20))
    slow = server.connect(receive_buffer=SMALL_BUFFER)
    talker, other = server.connect(), server.connect()
    everyone_hears_hello([talker, slow, other], story)
    lines = chat_lines(len(overflowing_payload()))
    flood(talker, other, lines, story)
    story.step(f"{slow.name}, which has not read anything, is owed more than its socket holds")
    server.expect_idle(window=seconds(1))
    slow.expect(said(talker, *lines), within=seconds(30))
    server.expect_idle(window=seconds(1))


@see("Step 5: close now, free later")
def test_hundred_clients_send_and_close_at_once(server, story):
    observer = server.connect()
    with story.summarized("100 clients connected"):
        leavers = [server.connect() for _ in range(100)]
    everyone_hears_hello([observer, *leavers], story)
    goodbyes = {said(leaver, f"{leaver.name} says goodbye\n".encode()) for leaver in leavers}
    at_start = server.open_descriptors()
    with server.frozen():
        with story.summarized("each of the 100 clients sent a line and closed its connection"):
            for leaver in leavers:
                leaver.send(f"{leaver.name} says goodbye\n".encode())
                leaver.close()
    # The server reads the first goodbye, and its broadcast finds the other connections closed: their writes fail
    # and they are closed before their own goodbyes are read, with their events still in the batch.
    server.expect_descriptors(at_most=at_start - 100, within=seconds(5))
    first, second = server.connect(), server.connect()
    first.send(b"is anyone here?\n")
    second.expect(said(first, b"is anyone here?\n"))
    before = observer.read_until(said(first, b"is anyone here?\n"))
    lines = before.splitlines(keepends=True)
    strays = [line for line in lines if line not in goodbyes]
    if not lines or strays or len(set(lines)) != len(lines):
        story.fail(f"{observer.name} to receive, before that, some of the 100 goodbyes, each intact and once",
                   f"{len(lines)} lines, {len(lines) - len(set(lines))} of them repeated"
                   f"{', such as the stray ' + show(strays[0]) if strays else ''}")
    story.step(f"{observer.name} had received {len(lines)} of the goodbyes, intact")


@see("The stale event")
def test_stale_event_for_a_reused_descriptor(start_server, story):
    """One batch: the talker's line makes the server close the victim (it is owed more than --max-backlog), accept()
    then hands the victim's descriptor number to a newcomer, and the victim's own event, later in the same batch,
    still points at the victim. Handled as an event of the victim, it reads the newcomer's socket: the newcomer's
    words would go out under the victim's name."""
    server = start_server("--max-backlog", "100")
    talker, victim = server.connect(), server.connect()
    everyone_hears_hello([talker, victim], story)
    with server.frozen():
        talker.send(b"a line too long for the victim's backlog limit: " + b"." * 100 + b"\n")
        talker.expect_delivered()
        newcomer = server.connect()
        newcomer.send(b"hello from the newcomer\n")
        newcomer.expect_delivered()
        victim.send(b"hi\n")
        victim.expect_delivered()
    talker.expect(said(newcomer, b"hello from the newcomer\n"), within=seconds(5))


@see("Step 5: close now, free later")
def test_close_with_changes_still_queued(start_server, story):
    """One batch: accept() takes a newcomer and queues its registrations for the next wait; then the talker's line
    makes the server close the newcomer (it is owed more than --max-backlog) before that wait. The queued
    registrations must go with it: handed to the kernel, they name a closed descriptor (EBADF), or the connection
    that accept() gives the same number next."""
    server = start_server("--max-backlog", "100")
    talker = server.connect()
    talker.send(b"hello\n")
    server.wait_until_quiet()
    with server.frozen():
        newcomer = server.connect()
        newcomer.expect_delivered()
        talker.send(b"a line too long for the newcomer's backlog limit: " + b"." * 100 + b"\n")
        talker.expect_delivered()
    newcomer.expect_close(within=seconds(5))
    witness = server.connect()
    server.wait_until_quiet()
    talker.send(b"is the server still here?\n")
    witness.expect(said(talker, b"is the server still here?\n"), within=seconds(5))
