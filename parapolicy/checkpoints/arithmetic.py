"""The private evaluator for ``${eval:'...'}`` in an untrusted checkpoint's cfg.

Upstream registers Python's ``eval`` as OmegaConf's ``eval`` resolver; here only literals,
arithmetic, comparisons, ``and``/``or``/``not``, ``a if c else b`` and list/tuple displays
are evaluated, with every result bounded *before* it is computed: integers of at most
``MAX_INT_BITS`` bits, strings/lists of at most ``MAX_SEQUENCE`` items, expressions of at
most ``MAX_EXPRESSION`` characters and ``MAX_EXPRESSION_NESTING`` levels (all in ``limits``). A list's size counts the
items of the lists inside it too (every sub-expression, however nested), so a list of
references to one long list cannot stand for far more work than its text shows.
"""

from __future__ import annotations

import ast
import math
import operator

from parapolicy.checkpoints.limits import MAX_EXPRESSION, MAX_EXPRESSION_NESTING, MAX_INT_BITS, MAX_SEQUENCE
from parapolicy.errors import CheckpointError

_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_NUMBER = (int, float, bool)


def _bits(x) -> int:
    return abs(int(x)).bit_length() if isinstance(x, (int, bool)) else 0


class _Sizes:
    """Items of every string and list the evaluator built, nested lists' items included.

    Recorded when a value is made (from its parts' sizes), so no value is ever walked."""

    def __init__(self):
        self._lists: dict = {}  # id -> (list or tuple, size); the value is kept so its id stays its own

    def of(self, x) -> int:
        if isinstance(x, str):
            return len(x)
        if isinstance(x, (list, tuple)):
            return self._lists[id(x)][1]
        return 0

    def made(self, x, size: int):
        if isinstance(x, (list, tuple)):
            self._lists[id(x)] = (x, size)
        return x


class _TooBig(Exception):
    pass


def _check_result_bounds(op, a, b, sizes: _Sizes) -> int:
    """Refuse an operation whose exact result would exceed the bounds, before computing it;
    returns the result's size (items, nested ones included)."""
    ints = isinstance(a, (int, bool)) and isinstance(b, (int, bool))
    if op is ast.Pow:
        if ints and b > 0 and abs(a) > 1 and b * max(_bits(a), 1) > MAX_INT_BITS:
            raise _TooBig(f"{a!r} ** {b!r}")
    elif op is ast.Mult:
        if ints and _bits(a) + _bits(b) > MAX_INT_BITS:
            raise _TooBig("product")
        for seq, n in ((a, b), (b, a)):
            if isinstance(seq, (str, list, tuple)) and isinstance(n, (int, bool)):
                if sizes.of(seq) * max(n, 0) > MAX_SEQUENCE:
                    raise _TooBig(f"sequence of {sizes.of(seq)} items * {n}")
                return sizes.of(seq) * max(n, 0)
    elif op is ast.Add:
        if sizes.of(a) + sizes.of(b) > MAX_SEQUENCE:
            raise _TooBig("concatenation")
        return sizes.of(a) + sizes.of(b)
    elif op is ast.Mod and isinstance(a, str):
        raise _TooBig("string formatting with %")  # '%0999999999d' % 1
    return 0


_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def safe_arithmetic(expression: str):
    """Evaluate literals, arithmetic, comparisons and ``a if c else b``; nothing else, nothing huge."""
    text = str(expression)
    shown = text if len(text) <= 80 else text[:77] + "..."
    if len(text) > MAX_EXPRESSION:
        raise CheckpointError(f"cfg interpolation ${{eval:...}} has {len(text)} characters; at most {MAX_EXPRESSION}")

    def fail(why: str):
        raise CheckpointError(f"cfg interpolation ${{eval:{shown!r}}} {why}")

    sizes = _Sizes()

    def ev(node, depth):
        if depth > MAX_EXPRESSION_NESTING:
            fail(f"nests deeper than {MAX_EXPRESSION_NESTING} levels")
        if isinstance(node, ast.Expression):
            return ev(node.body, depth + 1)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
            if _bits(node.value) > MAX_INT_BITS or sizes.of(node.value) > MAX_SEQUENCE:
                fail("holds a literal beyond the bounds")
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            a, b = ev(node.left, depth + 1), ev(node.right, depth + 1)
            try:
                size = _check_result_bounds(type(node.op), a, b, sizes)
                value = sizes.made(_BINARY[type(node.op)](a, b), size)
            except _TooBig as exc:
                fail(f"would build a value beyond the bounds ({exc}: at most {MAX_INT_BITS}-bit integers, "
                     f"{MAX_SEQUENCE}-item strings/lists)")
            except (ArithmeticError, TypeError, ValueError) as exc:
                fail(f"fails: {type(exc).__name__}: {str(exc)[:80]}")
            if isinstance(value, complex) or (isinstance(value, float) and not math.isfinite(value)):
                fail(f"gives {value!r}, not a finite real number")
            return value
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            operand = ev(node.operand, depth + 1)
            try:
                return _UNARY[type(node.op)](operand)
            except TypeError as exc:
                fail(f"fails: {str(exc)[:80]}")
        if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
            left = ev(node.left, depth + 1)
            for op, right_node in zip(node.ops, node.comparators):
                right = ev(right_node, depth + 1)
                try:
                    if not _COMPARE[type(op)](left, right):
                        return False
                except TypeError as exc:
                    fail(f"fails: {str(exc)[:80]}")
                left = right
            return True
        if isinstance(node, ast.BoolOp):
            values = [ev(v, depth + 1) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.IfExp):
            return ev(node.body, depth + 1) if ev(node.test, depth + 1) else ev(node.orelse, depth + 1)
        if isinstance(node, (ast.List, ast.Tuple)):
            if len(node.elts) > MAX_SEQUENCE:
                fail(f"lists more than {MAX_SEQUENCE} items")
            items = [ev(e, depth + 1) for e in node.elts]
            size = len(items) + sum(sizes.of(item) for item in items)
            if size > MAX_SEQUENCE:
                fail(f"builds a list of {size} items, nested lists' items included; at most {MAX_SEQUENCE}")
            return sizes.made(items if isinstance(node, ast.List) else tuple(items), size)
        fail("is not plain arithmetic; pass trust_checkpoint=True to evaluate it with Python")

    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        fail(f"is not valid: {exc.msg}")
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, parser stack overflow
        fail(f"cannot be parsed: {type(exc).__name__}")
    try:
        return ev(tree, 0)
    except RecursionError:
        fail(f"nests deeper than {MAX_EXPRESSION_NESTING} levels")
