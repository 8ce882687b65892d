"""Text from a zoo folder made safe to print: no terminal control sequences reach the screen."""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the format characters that reorder or hide text (bidi
# overrides and isolates, zero-width marks): what a zoo.json, a phase or an id could carry
# to move the cursor, recolour, retitle the terminal, or show one thing and mean another.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def printable(text: object, *, lines: bool = False) -> str:
    """`str(text)` with every control character written as its escape (`\\x1b`, `\\u202e`);
    newlines are kept when `lines` (a table), else escaped too (one error line stays one)."""

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if lines and char == "\n":
            return char
        return repr(char)[1:-1] if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    return _UNSAFE.sub(escape, str(text))
