"""Reading the Hydra cfg stored inside a DiffusionPolicy checkpoint.

Stored cfgs are usually resolved already (upstream's train.py resolves before saving),
but hand-made or older ones can still hold ``${eval:'...'}`` interpolations. Those are
evaluated here by a small arithmetic evaluator; Python's ``eval`` is used only when the
user trusts the checkpoint.
"""

from __future__ import annotations

import ast
import operator

from parapolicy.errors import CheckpointError

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def safe_arithmetic(expression: str):
    """Evaluate literals, arithmetic, comparisons and ``a if c else b``; nothing else."""

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
            left = ev(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = ev(right_node)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BoolOp):
            values = [ev(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.IfExp):
            return ev(node.body) if ev(node.test) else ev(node.orelse)
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        raise CheckpointError(
            f"cfg interpolation ${{eval:{expression!r}}} is not plain arithmetic; "
            "pass trust_checkpoint=True to evaluate it with Python"
        )

    try:
        tree = ast.parse(str(expression), mode="eval")
    except SyntaxError as exc:
        raise CheckpointError(f"cfg interpolation ${{eval:{expression!r}}} is not valid: {exc.msg}") from None
    return ev(tree)


def to_plain(node, trust: bool = False):
    """Resolve an OmegaConf node (with its root for interpolations) into plain Python."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if not isinstance(node, (DictConfig, ListConfig)):
        return node
    had_eval = OmegaConf.has_resolver("eval")
    if not had_eval:
        OmegaConf.register_new_resolver("eval", eval if trust else safe_arithmetic)
    try:
        return OmegaConf.to_container(node, resolve=True)
    except CheckpointError:
        raise
    except Exception as exc:  # omegaconf's interpolation errors
        cause = exc.__cause__ if isinstance(exc.__cause__, CheckpointError) else None
        if cause is not None:
            raise cause from None
        raise CheckpointError(f"cannot resolve the checkpoint's cfg: {exc}") from None
    finally:
        if not had_eval:
            OmegaConf.clear_resolver("eval")
