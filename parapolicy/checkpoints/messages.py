"""Short, escaped pieces of error messages about what a checkpoint holds."""

from __future__ import annotations

from parapolicy.tensor_safety import describe, key_path

__all__ = ["describe", "head", "key_path", "one_line", "quoted"]


def head(items, n: int = 5) -> str:
    """The first ``n`` items joined, and how many more."""
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def quoted(names, n: int = 5) -> str:
    """Names read from a file, each shown as its repr (a terminal escape stays visible text)."""
    return head([repr(name) for name in names], n)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (torch and omegaconf add multi-line context)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
