"""Lesson 10: the chat server on the reactor. Every line a client sends reaches every other client, prefixed with
the sender's address as the server sees it ("127.0.0.1:52114: hello"), and never comes back to its sender."""
import pytest

from vocabulary import see


@pytest.fixture
def program_name() -> str:
    return "chat"


def name_of(client) -> str:
    """A client's name in the room: its own address, which is what the server sees as its peer's."""
    host, port = client.socket.getsockname()[:2]
    return f"{host}:{port}"


def join(server, story, count):
    """`count` clients in the room. The last one says hello: once the others hear it, the server has accepted them
    all (it accepts in the order they connected)."""
    with story.summarized(f"{count} clients connected; the last said hello, and the others heard it"):
        clients = [server.connect() for _ in range(count)]
        clients[-1].send(b"hello\n")
        for client in clients[:-1]:
            client.expect(f"{name_of(clients[-1])}: hello\n".encode())
    return clients


@see("The servers on top")
def test_chat_lines_reach_every_other_client(server, story):
    alice, bob, carol = join(server, story, 3)
    alice.send(b"hello, room\n")
    bob.expect(f"{name_of(alice)}: hello, room\n".encode())
    carol.expect(f"{name_of(alice)}: hello, room\n".encode())
    bob.send(b"a line in ")
    bob.send(b"two pieces\n")
    # Alice's next bytes are Bob's line: had her own line come back to her, it would be there first.
    alice.expect(f"{name_of(bob)}: a line in two pieces\n".encode())
    carol.expect(f"{name_of(bob)}: a line in two pieces\n".encode())


@see("The servers on top")
def test_chat_member_leaving_disturbs_nobody(server, story):
    alice, bob, carol = join(server, story, 3)
    carol.reset()
    alice.send(b"is anybody there?\n")
    bob.expect(f"{name_of(alice)}: is anybody there?\n".encode())
    bob.send(b"I am\n")
    alice.expect(f"{name_of(bob)}: I am\n".encode())
    dave = server.connect()
    dave.send(b"me too\n")
    alice.expect(f"{name_of(dave)}: me too\n".encode())
    bob.expect(f"{name_of(dave)}: me too\n".encode())
