"""The input transformer that makes ``%plasma connect`` and ``%plasma sync`` awaited.

IPython turns ``%plasma sync`` into ``get_ipython().run_line_magic('plasma', 'sync')``.
For the commands that wait for the network, this post-transformer rewrites such a
line, when it is a statement of its own at the top level of the cell (optionally
``x = ...``), into ``await __plasma_magics__.line_async('sync')``. Both ipykernel
and the Pyodide kernel run top-level ``await``, so the cell finishes only when the
client is ready, and "Run all" runs the next cell after it. Lines inside functions
or blocks, and lines with other code around the magic, are left to the blocking
fallback in magics.py.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from .commands import AWAITED, split

__all__ = ["MAGICS_NAME", "AwaitPlasma"]

#: The name under which the magics live in the user's namespace (hidden from %who).
MAGICS_NAME = "__plasma_magics__"

_LINE = re.compile(
    r"^(?P<target>[A-Za-z_][A-Za-z0-9_]*\s*=\s*)?"
    r"get_ipython\(\)\.run_line_magic\('plasma', (?P<arg>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\)"
    r"\s*(?P<end>;?\s*)$"
)


class AwaitPlasma:
    """``ip.input_transformers_post`` entry: see the module docstring."""

    def __init__(self, shell: Any, magics: Any) -> None:
        self.shell = shell
        self.magics = magics
        self.rewritten = 0

    def __call__(self, lines: list[str]) -> list[str]:
        if not getattr(self.shell, "autoawait", True):
            return lines  # `%autoawait off`: top-level await would be a SyntaxError
        out = []
        changed = False
        for line in lines:
            rewritten = self._rewrite(line)
            if rewritten is not None:
                changed = True
                out.append(rewritten)
            else:
                out.append(line)
        if changed:
            # `%reset` may have cleared it; the rewritten lines need it.
            self.shell.user_ns[MAGICS_NAME] = self.magics
            self.shell.user_ns_hidden[MAGICS_NAME] = self.magics
            self.rewritten += 1
        return out

    @staticmethod
    def _rewrite(line: str) -> str | None:
        body = line.rstrip("\n")
        match = _LINE.match(body)
        if match is None:
            return None
        try:
            arg = ast.literal_eval(match.group("arg"))
        except (ValueError, SyntaxError):
            return None
        if not isinstance(arg, str) or split(arg)[0] not in AWAITED:
            return None
        target = match.group("target") or ""
        newline = line[len(body):]
        return f"{target}await {MAGICS_NAME}.line_async({arg!r}){match.group('end')}{newline}"
