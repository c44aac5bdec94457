"""Lesson 10: the echo server on the reactor passes lesson 01's tests, every one of them."""
import pytest

from vocabulary import flood_past_descriptor_limit, from_lesson, rerun, see


@pytest.fixture
def program_name() -> str:
    return "echo"


lesson_01 = from_lesson("01-echo")
test_bad_arguments_are_refused = rerun(lesson_01.test_bad_arguments_are_refused, "The program you are finishing")
test_one_client = rerun(lesson_01.test_one_client, "The servers on top")
test_fifty_interleaved_clients = rerun(lesson_01.test_fifty_interleaved_clients,
                                       "Step 3: one report, every operation it allows")
test_slow_reader_delays_nobody = rerun(lesson_01.test_slow_reader_delays_nobody, "The servers on top")
test_eof_with_pending_data = rerun(lesson_01.test_eof_with_pending_data, "The servers on top")
test_partial_writes = rerun(lesson_01.test_partial_writes, "Step 3: one report, every operation it allows")
test_no_spinning_while_idle = rerun(lesson_01.test_no_spinning_while_idle, "Step 1: one registration per descriptor")
test_vanishing_client_disturbs_nobody = rerun(lesson_01.test_vanishing_client_disturbs_nobody,
                                              "Step 4: closing cancels")
test_no_descriptor_leak = rerun(lesson_01.test_no_descriptor_leak, "Step 4: closing cancels")
test_half_close_with_much_still_owed = rerun(lesson_01.test_half_close_with_much_still_owed, "The servers on top")


@see("The servers on top")
def test_descriptor_limit_flood(start_server, story):
    flood_past_descriptor_limit(start_server, story)
