"""Doxygen's input filter for the project's headers: `python3 doxyfilter.py FILE` prints FILE as Doxygen should
read it.

The headers keep one plain contract comment per declaration (STYLE.md, habit 10): `// ...` lines, or `/* ... */`
in the C header, right above what they describe, and short `// ...` after a member. Doxygen reads only its own
comment forms, so this turns those into them, without touching the files:

- the comment that opens a file becomes the file's description (`\\file`);
- a comment block right above a declaration, at namespace, class or file scope, becomes its documentation
  (comments inside function bodies stay plain);
- a comment above a run of `#define`s names them as a group (`\\name`);
- `member;  // text` becomes `member;  ///< text`;
- in the text, characters Doxygen would take for commands or HTML (`\\ @ < > & # $ %`) are escaped, except in
  `code spans`.
"""
from __future__ import annotations

import re
import sys

# Braces opened after these hold declarations (`extern "C"` as _code_only leaves it: `extern ""`).
DECLARATION_SCOPE = re.compile(r"\b(namespace|class|struct|union|enum)\b|\bextern\s*\"\"")
SPECIALS = re.compile(r"([\\@<>&#$%])")


def escape(text: str) -> str:
    """Escapes Doxygen's special characters outside `code spans`."""
    parts = text.split("`")
    for index in range(0, len(parts), 2):  # even parts are outside backticks
        parts[index] = SPECIALS.sub(r"\\\1", parts[index])
    return "`".join(parts)


def _code_only(line: str) -> str:
    """A line without its string literals and comments, to count braces in."""
    line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(?:\\.|[^'\\])*'", "''", line)
    line = re.sub(r"/\*.*?\*/", "", line)
    return line.split("//", 1)[0]


class Scopes:
    """Which braces are open, and whether each opened a scope where declarations live (namespace, class, ...)
    or a function body."""

    def __init__(self) -> None:
        self.stack: list[bool] = []
        self.statement = ""

    def at_declaration_scope(self) -> bool:
        return all(self.stack)

    def feed(self, line: str) -> None:
        for char in _code_only(line):
            if char == "{":
                self.stack.append(bool(DECLARATION_SCOPE.search(self.statement)) and self.at_declaration_scope())
                self.statement = ""
            elif char == "}":
                if self.stack:
                    self.stack.pop()
                self.statement = ""
            elif char == ";":
                self.statement = ""
            else:
                self.statement += char


def _is_line_comment(line: str) -> bool:
    return line.lstrip().startswith("//")


def _is_code(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith(("//", "/*", "*"))


def filter_text(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    scopes = Scopes()
    index = 0
    seen_code = False
    in_macro = False
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        # A run of // lines, or one /* */ comment, starting on its own line.
        if _is_line_comment(line) or stripped.startswith("/*"):
            end = index
            if stripped.startswith("/*"):
                while "*/" not in lines[end] and end + 1 < len(lines):
                    end += 1
            else:
                while end + 1 < len(lines) and _is_line_comment(lines[end + 1]):
                    end += 1
            block = lines[index:end + 1]
            following = lines[end + 1] if end + 1 < len(lines) else ""
            if not seen_code:
                out += _file_comment(block)
            elif scopes.at_declaration_scope() and following.lstrip().startswith("#define"):
                out += _group(block, lines, end + 1)
                index = _group_end(lines, end + 1)
                out += lines[end + 1:index]
                # The group's end on a line of its own (a comment on a #define line belongs to the macro): the
                # blank line after the group if there is one, so that line numbers stay those of the file.
                out.append("/**@}*/")
                if index < len(lines) and not lines[index].strip():
                    index += 1
                continue
            elif scopes.at_declaration_scope() and _is_code(following) and not following.lstrip().startswith("#"):
                out += _documentation(block)
            else:
                out += block
            index = end + 1
            continue
        if stripped:
            seen_code = True
        if in_macro or stripped.startswith("#"):
            in_macro = line.rstrip().endswith("\\")
            out.append(line)
        else:
            out.append(_trailing(line) if scopes.at_declaration_scope() else line)
            scopes.feed(line)
        index += 1
    return "\n".join(out)


def _texts(block: list[str]) -> list[tuple[str, str]]:
    """Each line of a comment block as (indentation, text), without the comment's own marks."""
    indent = block[0][:len(block[0]) - len(block[0].lstrip())]
    texts = []
    for line in block:
        body = line.strip()
        if body.startswith("//"):
            body = body[2:]
        else:  # a line of a /* */ comment: drop /*, */ and the * that starts a continuation line
            body = re.sub(r"\*+/$", "", re.sub(r"^/\*+", "", body))
            body = re.sub(r"^\*(?!/)", "", body) if not line.strip().startswith("/*") else body
        body = body.rstrip()
        texts.append((indent, body[1:] if body.startswith(" ") else body))
    if texts and not texts[0][1] and len(texts) > 1:  # "/*" alone on its first line
        texts = texts[1:]
    if texts and not texts[-1][1] and len(texts) > 1:  # " */" alone on its last line
        texts = texts[:-1]
    return texts


def _documentation(block: list[str]) -> list[str]:
    return [f"{indent}/// {escape(text)}".rstrip() for indent, text in _texts(block)]


def _file_comment(block: list[str]) -> list[str]:
    return ["/// \\file"] + _documentation(block)


def _group(block: list[str], lines: list[str], start: int) -> list[str]:
    del lines, start
    title = " ".join(text.strip() for _, text in _texts(block) if text.strip())
    # \name takes one line: the whole comment, joined, names the group of #defines below it.
    return [f"/** \\name {escape(title)} */ /**@{{*/"] + [""] * (len(block) - 1)


def _group_end(lines: list[str], start: int) -> int:
    index = start
    while index < len(lines) and lines[index].lstrip().startswith("#define"):
        while lines[index].rstrip().endswith("\\"):
            index += 1
        index += 1
    return index


TRAILING_LINE = re.compile(r"^(?P<code>.*?[;,])(?P<space>\s*)//\s?(?P<text>.*)$")
TRAILING_BLOCK = re.compile(r"^(?P<code>.*?[;,])(?P<space>\s*)/\*\s?(?P<text>.*?)\s*\*/\s*$")


def _trailing(line: str) -> str:
    """`member;  // text` -> `member;  ///< text` (and the same for /* */)."""
    if '"' in line:  # a string literal could hold what looks like a comment: leave such lines alone
        return line
    found = TRAILING_LINE.match(line) or TRAILING_BLOCK.match(line)
    if not found or not found.group("code").strip():
        return line
    return f"{found.group('code')}{found.group('space')}///< {escape(found.group('text'))}".rstrip()


def main(arguments: list[str]) -> int:
    with open(arguments[0], encoding="utf-8") as source:
        sys.stdout.write(filter_text(source.read()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
