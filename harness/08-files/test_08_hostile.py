"""Lesson 08 against hostile clients: at the descriptor limit the server turns connections away (lesson 05's spare
descriptor), goes on following the log for its subscribers, and does not spin."""
import contextlib
import socket

from vocabulary import see, seconds


@see("The program you are finishing")
def test_descriptor_limit_flood(start_server, story, tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    server = start_server("--log", str(log), descriptor_limit=64)
    steady = server.connect()
    steady.expect(f"following {log}\n".encode())
    connections = []
    try:
        with story.summarized("200 more clients connected at once, more than the server has descriptors for"):
            for _ in range(200):
                connections.append(socket.create_connection((server.host, server.port), timeout=seconds(5)))
        with log.open("a") as writer:
            writer.write("during the flood\n")
        story.step("appended 'during the flood' to the log")
        steady.expect(b"during the flood\n", within=seconds(5))
        server.wait_until_quiet()
        server.expect_idle(window=seconds(1))  # a level-triggered listener at EMFILE, not emptied, spins
    finally:
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()
    story.step("the 200 clients of the flood closed their connections")
    server.wait_until_quiet()
    newcomer = server.connect()
    newcomer.expect(f"following {log}\n".encode(), within=seconds(1))
