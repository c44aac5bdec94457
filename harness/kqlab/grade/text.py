"""Text a student can influence, made safe to show: on a terminal, in logs, CSV, JUnit XML and HTML.

A compiler error quotes the student's source, a failure message quotes their server's output, a note quotes a file
name from their archive: any of it may carry a terminal escape sequence (which can move the cursor, rewrite what
the teacher sees, set the window title or the clipboard), a C1 control that some terminals read as one, or a
bidirectional override that shows text in another order than it is (CVE-2021-42574, "Trojan Source"). clean()
keeps line breaks and tabs and replaces every other such character with a visible U+FFFD.
"""
from __future__ import annotations

import re

# C0 but tab and newline; DEL; C1; the bidirectional embeddings, overrides and isolates, and the marks.
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f\x80-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
SHOWN_INSTEAD = "\ufffd"


def clean(text: str) -> str:
    """`text` with its control characters (C0 but \\t and \\n, C1) and bidirectional controls replaced."""
    return CONTROLS.sub(SHOWN_INSTEAD, text.replace("\r\n", "\n"))
