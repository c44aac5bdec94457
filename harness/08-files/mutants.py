"""Lesson 08's mutants: the solution with one classic mistake put back. `./kqlab test` builds each and checks that
the test named in caught_by fails against it (see kqlab/mutants.py)."""
from kqlab.mutants import Mutant

MUTANTS = [
    Mutant(
        name="never-reopens",
        mistake="A knote watches the file, not its name: after a rotation it follows the renamed file forever, and "
                "the new log under the old name is never read.",
        caught_by="test_rotation_loses_no_line",
        file="tail_server.cpp",
        replacements=(("void TailServer::check_name() {\n",
                       "void TailServer::check_name() {\n"
                       "  if (file_ != -2) return;  // MUTANT: never looks at the name again\n"),),
    ),
    Mutant(
        name="reads-the-path-not-the-descriptor",
        mistake="The log read by its name (open the path, read at the offset, close) instead of through the "
                "descriptor: what is written to the old file after a rotation is lost.",
        caught_by="test_rotation_loses_no_line",
        file="tail_server.cpp",
        replacements=(("    const ssize_t got = read(file_, buffer, sizeof buffer);\n",
                       "    // MUTANT: reads whatever file the name leads to now, at our offset\n"
                       "    const int by_name = open(path_.c_str(), O_RDONLY | O_CLOEXEC);\n"
                       "    const ssize_t got =\n"
                       "        by_name == -1 ? 0 : pread(by_name, buffer, sizeof buffer, lseek(file_, 0, SEEK_CUR));\n"
                       "    if (by_name != -1) close(by_name);\n"
                       "    if (got > 0) lseek(file_, got, SEEK_CUR);\n"),),
    ),
    Mutant(
        name="ignores-truncation",
        mistake="A truncation not noticed: the follower waits at its old offset, past the new end of the file, "
                "and the lines written from the new start are lost.",
        caught_by="test_truncation_restarts_from_the_new_start",
        file="tail_server.cpp",
        replacements=(("void TailServer::check_truncation() {\n",
                       "void TailServer::check_truncation() {\n"
                       "  if (file_ != -2) return;  // MUTANT: never checks\n"),),
    ),
    Mutant(
        name="stops-at-end-of-file",
        mistake="read() returning 0 taken as the end, as on a socket: at its first end of file the follower "
                "closes the file, and nothing appended later is read.",
        caught_by="test_appended_lines_reach_every_subscriber",
        file="tail_server.cpp",
        replacements=(("    if (got == 0) return false;",
                       "    if (got == 0) {  // MUTANT: the end of the file taken as the end of the story\n"
                       "      close(file_);\n"
                       "      file_ = -1;\n"
                       "      return false;\n"
                       "    }\n"),),
    ),
    Mutant(
        name="vnode-without-clear",
        mistake="EVFILT_VNODE registered without EV_CLEAR: once a note has fired it stays set, and the event comes "
                "back on every wait: 100% CPU while the log is quiet.",
        caught_by="test_idle_follower_uses_no_cpu",
        file="tail_server.cpp",
        replacements=(("  watch(file_, EVFILT_VNODE, EV_ADD | EV_CLEAR, kFileNotes);",
                       "  watch(file_, EVFILT_VNODE, EV_ADD, kFileNotes);  // MUTANT: no EV_CLEAR"),),
    ),
    Mutant(
        name="takes-a-write-for-a-line",
        mistake="Each read taken for whole lines: the start of a line whose end is not written yet is sent as a line "
                "of its own, and the line arrives cut in two.",
        caught_by="test_a_write_is_not_a_line",
        file="tail_server.cpp",
        replacements=(("    } else if (partial_.size() > kLongestLine) {\n",
                       "    } else if (true) {  // MUTANT: what was read is a line, newline or not\n"),),
    ),
    Mutant(
        name="truncation-keeps-the-partial-line",
        mistake="After a truncation the start of a line cut off is kept: it is glued to the first new line.",
        caught_by="test_truncation_drops_the_line_cut_off",
        file="tail_server.cpp",
        replacements=(("  partial_.clear();  // the start of a line whose end was cut off\n", "  // MUTANT: partial_ kept\n"),),
    ),
    Mutant(
        name="rotation-drops-the-unfinished-line",
        mistake="At a rotation the old file's last line, never given its newline, is dropped instead of sent.",
        caught_by="test_rotation_keeps_the_old_files_unfinished_line",
        file="tail_server.cpp",
        replacements=(("  if (!partial_.empty()) broadcast(partial_ + \"\\n\");  // its last line never got its newline\n",
                       "  // MUTANT: the unfinished last line is dropped\n"),),
    ),
    Mutant(
        name="reopens-the-same-file",
        mistake="The name's file not compared with the one followed: any change in the log's directory reopens the "
                "log, and it is read again from its start.",
        caught_by="test_a_neighbour_file_changes_nothing",
        file="tail_server.cpp",
        replacements=(("  if (named.st_dev == followed.st_dev && named.st_ino == followed.st_ino) {",
                       "  if (false) {  // MUTANT: never the same file"),),
    ),
    Mutant(
        name="skips-the-rest-of-the-old-file",
        mistake="At a rotation the old file is dropped at once: what was written to it before the new file "
                "appeared is lost.",
        caught_by="test_rotation_reads_the_old_file_to_its_end",
        file="tail_server.cpp",
        replacements=(("  while (read_appended()) {\n  }\n", "  // MUTANT: the old file is not read to its end\n"),),
    ),
    Mutant(
        name="truncation-off-by-one",
        mistake="A file no longer than the offset taken for a truncated one: at its end, with nothing new, the "
                "follower starts again from the start and sends the whole log again.",
        caught_by="test_appended_lines_reach_every_subscriber",
        file="tail_server.cpp",
        replacements=(("  if (file.st_size >= offset) return;", "  if (file.st_size > offset) return;  // MUTANT"),),
    ),
    Mutant(
        name="truncation-skips-to-the-end",
        mistake="After a truncation the follower goes to the new end, as at its start, instead of the new start: "
                "the lines written since the truncation are lost.",
        caught_by="test_truncation_restarts_from_the_new_start",
        file="tail_server.cpp",
        replacements=(("  if (lseek(file_, 0, SEEK_SET) == -1) kqlab::fail(\"lseek \" + path_);",
                       "  if (lseek(file_, 0, SEEK_END) == -1) kqlab::fail(\"lseek \" + path_);  // MUTANT"),),
    ),
    Mutant(
        name="new-log-from-its-end",
        mistake="The new log after a rotation followed from its end, like the log at start: what it holds "
                "already, written before the follower noticed it, is lost.",
        caught_by="test_rotation_loses_no_line",
        file="tail_server.cpp",
        replacements=(("  file_ = fresh;\n", "  file_ = fresh;\n  lseek(file_, 0, SEEK_END);  // MUTANT\n"),),
    ),
    Mutant(
        name="keeps-the-old-file-open",
        mistake="The old file's descriptor is not closed at a rotation: a descriptor lost at every rotation.",
        caught_by="test_rotations_leak_no_descriptor",
        file="tail_server.cpp",
        replacements=(("  close(file_);  // and its knotes with it\n", "  // MUTANT: the old file stays open\n"),),
    ),
    Mutant(
        name="vnode-only",
        mistake="Only EVFILT_VNODE watched, not EVFILT_READ: a burst longer than one turn's bounded read waits "
                "for the next write to the log.",
        caught_by="test_a_burst_longer_than_one_turn",
        file="tail_server.cpp",
        replacements=(("  watch(file_, EVFILT_READ, EV_ADD);\n", "  // MUTANT: no EVFILT_READ\n"),),
    ),
]
