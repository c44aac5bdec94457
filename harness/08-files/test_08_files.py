"""Lesson 08: following a file. Every line appended to the log reaches every subscriber, in order, through the log's
rotations and truncations, and the follower sleeps while the log is quiet."""
import os

import pytest

from vocabulary import see, seconds

SUBSCRIBERS = 5


class Log:
    """The log file, and the program that writes it: appends whole lines (O_APPEND, unbuffered), rotates it and
    truncates it, each action a step of the story."""

    def __init__(self, path, story):
        self.path = path
        self.story = story
        path.write_bytes(b"an old line, written before the server started\n")
        self.writer = open(path, "ab", buffering=0)
        story.step(f"created the log {path} with one line in it")

    def append(self, lines, what=None):
        self.writer.write(b"".join(line + b"\n" for line in lines))
        self.story.step(f"appended {what or ', '.join(repr(line.decode()) for line in lines)} to the log")

    def append_in_pieces(self, line, cut):
        self.writer.write(line[:cut])
        self.writer.write(line[cut:] + b"\n")
        self.story.step(f"appended {line.decode()!r} to the log in two writes, cut after {cut} bytes")

    def rename_to(self, name):
        os.rename(self.path, self.path.with_name(name))
        self.story.step(f"renamed the log to {name} (the writer keeps writing to it)")

    def create_anew(self):
        self.writer.close()
        self.writer = open(self.path, "ab", buffering=0)
        self.story.step(f"created a new {self.path.name} and made the writer write to it")

    def delete(self):
        self.path.unlink()
        self.story.step(f"deleted {self.path.name} (the writer still has it open)")

    def truncate(self):
        self.writer.truncate(0)
        self.story.step("truncated the log to 0 bytes (the writer appends at the new end)")

    def cut_to(self, lines, what):
        """Rewrites the log's start in place, then cuts the file there: the follower never sees an empty file, only
        one that shrank below what it read, with the new lines already in it. (Truncating to 0 and then appending
        would let a quick follower find the empty file first, where going to the end and going to the start are
        the same place.)"""
        content = b"".join(line + b"\n" for line in lines)
        descriptor = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(descriptor, content, 0)
            os.ftruncate(descriptor, len(content))
        finally:
            os.close(descriptor)
        self.story.step(f"wrote {what} over the start of the log and cut it there, to {len(content)} bytes "
                        f"(the writer appends at the new end)")

    def close(self):
        self.writer.close()


@pytest.fixture
def log(tmp_path, story):
    log = Log(tmp_path / "app.log", story)
    yield log
    log.close()


@pytest.fixture
def server(start_server, log):
    return start_server("--log", str(log.path))


def subscribe(server, log, count=SUBSCRIBERS):
    with server.story.summarized(f"{count} subscribers connected and were told 'following {log.path}'"):
        clients = [server.connect() for _ in range(count)]
        for client in clients:
            client.expect(f"following {log.path}\n".encode())
    return clients


def expect_lines(clients, lines, within=None):
    """Each client receives exactly `lines`, in order, next."""
    story = clients[0].story
    with story.summarized(f"each subscriber received the {len(lines)} lines, in order"):
        for client in clients:
            got = [line for _, line in client.receive_lines(len(lines), within=within or seconds(3))]
            if got != lines:
                first = next(i for i, (a, b) in enumerate(zip(got, lines)) if a != b)
                story.fail(f"{client.name} receives the {len(lines)} lines in order; line {first + 1} is "
                           f"{lines[first].decode()!r}", f"line {first + 1} is {got[first].decode('latin-1')!r}")


def numbered(prefix, count, width=0):
    return [f"{prefix} {n:04d} {'x' * width}".rstrip().encode() for n in range(1, count + 1)]


@see("Step 2: read what was appended")
def test_appended_lines_reach_every_subscriber(server, log):
    clients = subscribe(server, log)
    log.append([b"first"])
    expect_lines(clients, [b"first"])
    log.append_in_pieces(b"a line written in two pieces", 7)
    expect_lines(clients, [b"a line written in two pieces"])
    burst = numbered("burst", 200)
    log.append(burst, "200 lines in one write")
    expect_lines(clients, burst)
    big = numbered("big", 5000, width=90)
    log.append(big, "5000 lines of 100 bytes (500 KB) in one write")
    expect_lines(clients, big, within=seconds(10))
    log.append([b"last"])
    expect_lines(clients, [b"last"])


@see("Step 4: follow the name through a rotation")
def test_rotation_loses_no_line(server, log):
    clients = subscribe(server, log)
    log.append([b"A1", b"A2"])
    expect_lines(clients, [b"A1", b"A2"])
    log.rename_to("app.log.1")
    log.append([b"A3 (written to the renamed file)"])
    # The new log already holds lines when the follower first sees it, whatever the machine's load: it must read
    # them, not start from their end as it did with the first log.
    with server.frozen():
        log.create_anew()
        log.append([b"B1", b"B2"])
    expect_lines(clients, [b"A3 (written to the renamed file)", b"B1", b"B2"])
    log.append([b"B3"])
    expect_lines(clients, [b"B3"])
    log.delete()
    log.append([b"B4 (written to the deleted file)"])
    log.create_anew()
    log.append([b"C1"])
    expect_lines(clients, [b"B4 (written to the deleted file)", b"C1"])


@see("Step 3: notice a truncation")
def test_truncation_restarts_from_the_new_start(server, log):
    clients = subscribe(server, log)
    long_lines = numbered("long", 20, width=200)
    log.append(long_lines, "20 lines of 210 bytes")
    expect_lines(clients, long_lines)
    # Far shorter than what the server has read already: it cannot miss that the file shrank, whenever it looks,
    # and the lines after the cut are there before it can look.
    log.cut_to([b"after the truncation", b"second line"], "2 lines")
    expect_lines(clients, [b"after the truncation", b"second line"])
    log.append([b"and one more"])
    expect_lines(clients, [b"and one more"])


@see("Step 1: watch the descriptor")
def test_idle_follower_uses_no_cpu(server, log):
    clients = subscribe(server, log)
    log.append(numbered("busy", 100), "100 lines")
    expect_lines(clients, numbered("busy", 100))
    server.expect_idle(window=seconds(1))


@see("Step 2: read what was appended")
def test_a_write_is_not_a_line(server, log):
    """The writer writes half a line, and the follower reads it before the rest is written: what it read is kept
    until its newline comes, not sent as a line of its own."""
    clients = subscribe(server, log, count=2)
    log.writer.write(b"half a li")
    log.story.step("appended 'half a li' to the log, without a newline")
    server.wait_until_quiet()
    log.writer.write(b"ne, and the rest of it\n")
    log.story.step("appended 'ne, and the rest of it' and a newline")
    expect_lines(clients, [b"half a line, and the rest of it"])


@see("Step 3: notice a truncation")
def test_truncation_drops_the_line_cut_off(server, log):
    """Half a line is read, then the file is truncated: that half was cut off, and is not glued to the first line
    written after the truncation."""
    clients = subscribe(server, log, count=2)
    log.writer.write(b"cut off " * 40)
    log.story.step("appended 320 bytes of a line, without its newline")
    server.wait_until_quiet()
    log.truncate()
    server.wait_until_quiet()
    log.append([b"after the truncation"])
    expect_lines(clients, [b"after the truncation"])


@see("Step 4: follow the name through a rotation")
def test_rotation_keeps_the_old_files_unfinished_line(server, log):
    """The old file's last line never got its newline before the rotation: it is still part of the log, sent
    before the new file's lines."""
    clients = subscribe(server, log, count=2)
    log.append([b"A1"])
    expect_lines(clients, [b"A1"])
    log.writer.write(b"A2, never finished")
    log.story.step("appended 'A2, never finished' to the log, without a newline")
    log.rename_to("app.log.1")
    log.create_anew()
    log.append([b"B1"])
    expect_lines(clients, [b"A2, never finished", b"B1"])


@see("Step 4: follow the name through a rotation")
def test_a_neighbour_file_changes_nothing(server, log):
    """Another file created in the log's directory writes the directory too: the log's name still leads to the
    file followed, and nothing is read again."""
    clients = subscribe(server, log, count=2)
    log.append([b"A1"])
    expect_lines(clients, [b"A1"])
    neighbour = log.path.with_name("neighbour.txt")
    neighbour.write_bytes(b"not the log\n")
    log.story.step(f"created {neighbour.name} beside the log")
    server.wait_until_quiet()
    log.append([b"A2"])
    expect_lines(clients, [b"A2"])


@see("Step 4: follow the name through a rotation")
def test_rotations_leak_no_descriptor(server, log):
    """Each rotation replaces the file followed: the old one's descriptor is closed, its knotes with it."""
    clients = subscribe(server, log, count=1)
    log.append([b"warm-up"])
    expect_lines(clients, [b"warm-up"])
    baseline = server.open_descriptors()
    log.story.step(f"the server had {baseline} descriptors open")
    for rotation in range(1, 6):
        log.rename_to(f"app.log.{rotation}")
        log.create_anew()
        log.append([f"line {rotation}".encode()])
        expect_lines(clients, [f"line {rotation}".encode()])
    server.expect_descriptors(baseline, within=seconds(2))


@see("Step 2: read what was appended")
def test_a_burst_longer_than_one_turn(server, log):
    """3 MB appended in one write, far more than one turn's bounded read: EVFILT_READ, level-triggered, brings the
    follower back for the rest, with no further write to the log."""
    clients = subscribe(server, log, count=2)
    burst = numbered("burst", 30000, width=90)
    log.append(burst, "30000 lines of 100 bytes (3 MB) in one write")
    expect_lines(clients, burst, within=seconds(10))


@see("Step 4: follow the name through a rotation")
def test_rotation_reads_the_old_file_to_its_end(server, log):
    """The new log appears first, then a line is written to the old one: the server hears of the new name first,
    and must still read the old file to its end before it follows the new one."""
    clients = subscribe(server, log, count=2)
    log.append([b"A1"])
    expect_lines(clients, [b"A1"])
    log.rename_to("app.log.1")
    server.wait_until_quiet()
    with server.frozen():
        fresh = open(log.path, "ab", buffering=0)
        log.story.step(f"created a new {log.path.name}")
        log.append([b"A2 (written to the old file after the new one appeared)"])
        fresh.write(b"B1\n")
        log.story.step("appended 'B1' to the new log")
    log.writer.close()
    log.writer = fresh
    expect_lines(clients, [b"A2 (written to the old file after the new one appeared)", b"B1"])
