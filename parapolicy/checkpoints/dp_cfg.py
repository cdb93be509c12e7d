"""Reading the Hydra cfg stored inside a DiffusionPolicy checkpoint.

Stored cfgs are usually resolved already (upstream's train.py resolves before saving), but
hand-made or older ones can still hold interpolations. For an untrusted file OmegaConf's
resolver registry is never consulted: the cfg is copied into plain Python (bounded in size
and depth, so shared-node graphs and cycles cannot blow up), then each interpolation is
parsed with OmegaConf's grammar and resolved here. ``${a.b}`` references are followed,
``${eval:'...'}`` goes to the private arithmetic evaluator (whatever ``eval`` resolver the
process has registered, e.g. upstream's Python ``eval``), and every other resolver
(``oc.env``, ``oc.decode``, ``hydra``, custom ones) is refused without being called.
Python's ``eval`` and the registered resolvers are used only when the user trusts the file.
"""

from __future__ import annotations

import re

from parapolicy.checkpoints.arithmetic import safe_arithmetic
from parapolicy.checkpoints.limits import (
    MAX_CFG_NESTING,
    MAX_CFG_NODES,
    MAX_INTERPOLATION,
    MAX_PARSED,
    MAX_REFERENCE_DEPTH,
    MAX_STRING,
    MAX_WORK,
)
from parapolicy.checkpoints.messages import describe, key_path, one_line
from parapolicy.errors import CheckpointError

_TRUST_HINT = "pass trust_checkpoint=True only if you trust this file"

__all__ = ["safe_arithmetic", "to_plain", "resolve_section"]


def resolve_section(cfg, dotted: str, trust: bool = False, default=None):
    """The fully resolved plain value at ``dotted`` (e.g. ``'policy'``) of a stored cfg."""
    if trust:
        node = cfg
        for part in dotted.split("."):
            try:
                node = node[part]
            except Exception:
                return default
        return _to_plain_trusted(node)
    root = _RawCopy().copy(cfg)
    path = tuple(dotted.split("."))
    if _lookup(root, path) is _ABSENT:
        return default
    return _Resolver(root).value_at(path)


def to_plain(node, trust: bool = False):
    """Resolve an OmegaConf node (with its root for interpolations) into plain Python."""
    if trust:
        return _to_plain_trusted(node)
    root = node
    for _ in range(MAX_CFG_NESTING):  # bounded walk up: a pickled parent chain may be cyclic
        parent = getattr(root, "__dict__", {}).get("_parent")
        if parent is None:
            break
        root = parent
    copier = _RawCopy(find=node)
    raw_root = copier.copy(root)
    path = copier.found if copier.found is not None else ()
    resolver = _Resolver(raw_root if copier.found is not None else copier.copy(node))
    return resolver.value_at(path)


def _to_plain_trusted(node):
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if not isinstance(node, (DictConfig, ListConfig)):
        return node
    had_eval = OmegaConf.has_resolver("eval")
    if not had_eval:
        OmegaConf.register_new_resolver("eval", eval)
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception as exc:  # omegaconf's interpolation errors
        raise CheckpointError(f"cannot resolve the checkpoint's cfg: {one_line(exc)}") from None
    finally:
        if not had_eval:
            OmegaConf.clear_resolver("eval")


_ABSENT = object()
_SCALARS = (str, int, float, bool, type(None), bytes)


class _RawCopy:
    """Plain dicts/lists/scalars from OmegaConf nodes, without resolving anything."""

    def __init__(self, find=None):
        self.count = 0
        self.find, self.found = find, None

    def copy(self, node, path=(), depth=0):
        from omegaconf import DictConfig, ListConfig
        from omegaconf.nodes import ValueNode

        self.count += 1
        if self.count > MAX_CFG_NODES:
            raise CheckpointError(f"the checkpoint's cfg has more than {MAX_CFG_NODES} values (shared or cyclic nodes?)")
        if depth > MAX_CFG_NESTING:
            raise CheckpointError(f"the checkpoint's cfg nests deeper than {MAX_CFG_NESTING} levels at {_dotted(path)}")
        if self.find is not None and node is self.find and self.found is None:
            self.found = path
        if isinstance(node, (DictConfig, ListConfig)):
            content = node.__dict__.get("_content")
        elif isinstance(node, ValueNode):
            content = node.__dict__.get("_val")
        else:
            content = node
        if isinstance(content, dict):
            out = {}
            for key, value in content.items():
                if not isinstance(key, (str, int, float, bool, type(None))):
                    raise CheckpointError(f"the checkpoint's cfg has a key of type {type(key).__name__} at {_dotted(path)}")
                out[key] = self.copy(value, path + (key,), depth + 1)
            return out
        if isinstance(content, (list, tuple)):
            return [self.copy(value, path + (i,), depth + 1) for i, value in enumerate(content)]
        if isinstance(content, (DictConfig, ListConfig, ValueNode)):
            return self.copy(content, path, depth + 1)
        if type(content) in _SCALARS:
            return content
        raise CheckpointError(f"the checkpoint's cfg holds a {type(content).__name__} at {_dotted(path)}; expected plain data")


def _dotted(path) -> str:
    where = "cfg"
    for key in path:
        where = key_path(where, key)
    return where


def _lookup(root, path):
    node = root
    for part in path:
        if isinstance(node, dict):
            if part in node:
                node = node[part]
            elif isinstance(part, str) and part.isdigit() and int(part) in node:
                node = node[int(part)]
            else:
                return _ABSENT
        elif isinstance(node, list):
            try:
                index = int(part)
            except (TypeError, ValueError):
                return _ABSENT
            if not 0 <= index < len(node):
                return _ABSENT
            node = node[index]
        else:
            return _ABSENT
    return node


def _size(value) -> int:
    """Work units for a resolved value: characters of strings, one per other value."""
    if isinstance(value, str):
        return len(value) + 1
    if isinstance(value, dict):
        return 1 + sum(_size(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_size(v) for v in value)
    return 1


_KEY_TOKEN = re.compile(r"[^.\[\]]+")


class _Resolver:
    """Resolves a raw cfg copy: references followed (memoised), ``eval`` arithmetic, nothing else."""

    def __init__(self, root):
        self.root = root
        self.cache: dict = {}
        self.active: list = []
        self.work = 0
        self.parsed = 0

    def _charge(self, units: int, where) -> None:
        self.work += units
        if self.work > MAX_WORK:
            raise CheckpointError(
                f"resolving the checkpoint's cfg at {_dotted(where)} expands past {MAX_WORK} values/characters "
                "(exponential interpolation?)"
            )

    def value_at(self, path):
        path = tuple(path)
        if path in self.cache:
            value, size = self.cache[path]
            self._charge(size, path)
            return value
        if path in self.active:
            cycle = " -> ".join(_dotted(p) for p in self.active[self.active.index(path):] + [path])
            raise CheckpointError(f"the checkpoint's cfg has an interpolation cycle: {cycle}")
        if len(self.active) >= MAX_REFERENCE_DEPTH + MAX_CFG_NESTING:
            raise CheckpointError(f"the checkpoint's cfg resolves deeper than allowed at {_dotted(path)}")
        raw = _lookup(self.root, path)
        if raw is _ABSENT:
            raise CheckpointError(f"the checkpoint's cfg has no {_dotted(path)}")
        self.active.append(path)
        try:
            if isinstance(raw, dict):
                value = {k: self.value_at(path + (k,)) for k in raw}
            elif isinstance(raw, list):
                value = [self.value_at(path + (i,)) for i in range(len(raw))]
            elif isinstance(raw, str) and "${" in raw:
                value = self._interpolate(raw, path)
            else:
                value = raw
        finally:
            self.active.pop()
        size = _size(value)
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise CheckpointError(f"{_dotted(path)} resolves to a string of {len(value)} characters; at most {MAX_STRING}")
        self.cache[path] = (value, size)
        self._charge(size, path)
        return value

    def _interpolate(self, text: str, path):
        from omegaconf.grammar_parser import parse
        from omegaconf.grammar_visitor import GrammarVisitor

        where = _dotted(path)
        shown = text if len(text) <= 80 else text[:77] + "..."
        self.parsed += len(text)
        if len(text) > MAX_INTERPOLATION or self.parsed > MAX_PARSED:
            raise CheckpointError(
                f"{where} holds an interpolation of {len(text)} characters ({self.parsed} in all); at most "
                f"{MAX_INTERPOLATION} each and {MAX_PARSED} in all"
            )
        pieces = [0]

        def on_reference(key: str, memo):
            target = self._target(key, path, where)
            if _lookup(self.root, target) is _ABSENT:
                raise CheckpointError(f"{where}: interpolation {shown!r} refers to {_dotted(target)}, which the cfg lacks")
            value = self.value_at(target)
            pieces[0] += _size(value)
            if pieces[0] > MAX_STRING:
                raise CheckpointError(f"{where}: interpolation {shown!r} builds more than {MAX_STRING} characters")
            return value

        def on_resolver(name: str, args: tuple, args_str: tuple):
            if name != "eval":
                raise CheckpointError(
                    f"{where}: interpolation {shown!r} uses the resolver {str(name)[:40]!r}; an untrusted checkpoint "
                    f"may only use ${{a.b}} references and ${{eval:...}} arithmetic ({_TRUST_HINT})"
                )
            if len(args) != 1 or not isinstance(args[0], (str, int, float, bool)):
                raise CheckpointError(f"{where}: ${{eval:...}} needs one expression, found {len(args)} arguments")
            return safe_arithmetic(str(args[0]))

        try:
            tree = parse(text)
            return GrammarVisitor(on_reference, on_resolver, memo=None).visit(tree)
        except CheckpointError:
            raise
        except RecursionError:
            raise CheckpointError(f"{where}: interpolation {shown!r} nests too deeply") from None
        except Exception as exc:  # grammar errors, visitor assertions
            raise CheckpointError(f"{where}: cannot resolve interpolation {shown!r}: {one_line(exc)}") from None

    def _target(self, key: str, path, where: str):
        dots = len(key) - len(key.lstrip("."))
        if dots:
            if dots > len(path):
                raise CheckpointError(f"{where}: relative interpolation {'${' + key + '}'!r} goes above the cfg root")
            base = path[:-dots]
        else:
            base = ()
        tokens = _KEY_TOKEN.findall(key[dots:])
        if not tokens:
            raise CheckpointError(f"{where}: interpolation {'${' + key + '}'!r} names no key; found {describe(key)}")
        target, node = list(base), _lookup(self.root, base)
        for token in tokens:  # list indices as ints, so one node has one cache key
            if isinstance(node, list) and token.isdigit():
                token = int(token)
            target.append(token)
            node = _lookup(node, (token,)) if node is not _ABSENT else _ABSENT
        return tuple(target)
