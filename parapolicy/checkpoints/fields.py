"""One typed, bounded reader for the fields of a checkpoint's config, used by every format.

A field is read as an integer, number, flag, choice, mapping or integer list within bounds,
so a type-confused or absurd value fails before anything is built, with one
``CheckpointError`` naming the field, what was expected and what was found. The checks are
the same for every format; only the wording differs (users and tests read DiffusionPolicy
``cfg.policy.*`` paths and LeRobot ``config.json`` field names), so each format has a
``FieldChecks`` that words its errors.
"""

from __future__ import annotations

import math

from parapolicy.errors import CheckpointError
from parapolicy.tensor_safety import describe, key_path

_REQUIRED = object()


class FieldChecks:
    """Value checks worded for a DiffusionPolicy cfg: ``cfg.policy.horizon must be an integer in [1, 4096], ...``."""

    integral_floats = True  # ``${eval:...}`` arithmetic gives 16.0 where the cfg means 16
    names_list_items = True  # a bad list item is named by its index
    mapping_noun = "a mapping"

    def where(self, parent: str, key) -> str:
        return key_path(parent, key)

    def wrong(self, where: str, expected: str, value) -> CheckpointError:
        return CheckpointError(f"{where} must be {expected}, found {describe(value)}")

    def missing(self, parent: str, key) -> CheckpointError:
        return CheckpointError(f"{parent} lacks {key!r}")

    def list_noun(self, min_len: int, max_len: int, lo: int, hi: int) -> str:
        return f"a list of {min_len} to {max_len} integers"

    # ------------------------------------------------------------------ the checks, the same for every format
    def int(self, where: str, value, lo: int, hi: int) -> int:
        if self.integral_floats and isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if type(value) is not int or not lo <= value <= hi:
            raise self.wrong(where, f"an integer in [{lo}, {hi}]", value)
        return value

    def bool(self, where: str, value) -> bool:
        if type(value) is not bool:
            raise self.wrong(where, "true or false", value)
        return value

    def float(self, where: str, value, lo: float, hi: float) -> float:
        if type(value) not in (int, float) or not lo <= value <= hi:  # NaN fails too
            raise self.wrong(where, f"a number in [{lo}, {hi}]", value)
        return float(value)

    def choice(self, where: str, value, options) -> str:
        if not isinstance(value, str) or value not in options:
            raise self.wrong(where, f"one of {list(options)}", value)
        return value

    def mapping(self, where: str, value) -> dict:
        if not isinstance(value, dict):
            raise self.wrong(where, self.mapping_noun, value)
        return value

    def int_list(self, where: str, value, min_len: int, max_len: int, lo: int, hi: int) -> list[int]:
        noun = self.list_noun(min_len, max_len, lo, hi)
        if not isinstance(value, (list, tuple)) or not min_len <= len(value) <= max_len:
            raise self.wrong(where, noun, value)
        if self.names_list_items:
            return [self.int(f"{where}[{i}]", v, lo, hi) for i, v in enumerate(value)]
        if not all(type(v) is int and lo <= v <= hi for v in value):
            raise self.wrong(where, noun, value)
        return list(value)


class ConfigJsonChecks(FieldChecks):
    """Value checks worded for a LeRobot config.json: ``config.json horizon: expected an integer in [1, 1024], ...``."""

    integral_floats = False  # JSON writes integers as integers
    names_list_items = False
    mapping_noun = "an object"

    def where(self, parent: str, key) -> str:
        return f"{parent} {key}"

    def wrong(self, where: str, expected: str, value) -> CheckpointError:
        return CheckpointError(f"{where}: expected {expected}, found {value!r:.60}")

    def missing(self, parent: str, key) -> CheckpointError:
        return CheckpointError(f"{parent} has no {key!r}: expected it (its default differs between LeRobot releases, "
                               "so it must be stated)")

    def list_noun(self, min_len: int, max_len: int, lo: int, hi: int) -> str:
        return f"{min_len}-{max_len} integers in [{lo}, {hi}]"


DP_CHECKS, CONFIG_JSON_CHECKS = FieldChecks(), ConfigJsonChecks()
# the DiffusionPolicy checks by their old names, for values read outside a ``Fields``
check_int, check_bool, check_float = DP_CHECKS.int, DP_CHECKS.bool, DP_CHECKS.float
check_int_list, check_dict = DP_CHECKS.int_list, DP_CHECKS.mapping


class Fields:
    """Typed, bounded reads from one config mapping; ``name`` prefixes every error (``cfg.policy``)."""

    def __init__(self, cfg, name: str, checks: FieldChecks = DP_CHECKS):
        self.checks = checks
        self.cfg, self.name = checks.mapping(name, cfg), name

    def where(self, key) -> str:
        return self.checks.where(self.name, key)

    def raw(self, key, default=_REQUIRED):
        if key in self.cfg:
            return self.cfg[key]
        if default is _REQUIRED:
            raise self.checks.missing(self.name, key)
        return default

    def int(self, key, lo, hi, default=_REQUIRED) -> int:
        return self.checks.int(self.where(key), self.raw(key, default), lo, hi)

    def opt_int(self, key, lo, hi, default=None):
        value = self.raw(key, default)
        return None if value is None else self.checks.int(self.where(key), value, lo, hi)

    def bool(self, key, default=_REQUIRED) -> bool:
        return self.checks.bool(self.where(key), self.raw(key, default))

    def float(self, key, lo, hi, default=_REQUIRED) -> float:
        return self.checks.float(self.where(key), self.raw(key, default), lo, hi)

    def choice(self, key, options, default=_REQUIRED) -> str:
        return self.checks.choice(self.where(key), self.raw(key, default), options)

    def int_list(self, key, min_len, max_len, lo, hi, default=_REQUIRED) -> list:
        return self.checks.int_list(self.where(key), self.raw(key, default), min_len, max_len, lo, hi)

    def dict(self, key, default=_REQUIRED) -> "Fields":
        return Fields(self.raw(key, default), self.where(key), self.checks)
