"""A rollout command line checked before anything runs: every job composes, every key exists,
settings are in range and the output folder is writable.

Hydra reports a mistyped key or option in many lines (or a traceback), after it has made the
run folder. Here each mistake becomes one ``RolloutConfigError`` line naming the bad key or
value and the nearest valid ones, and nothing is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import os

from omegaconf import DictConfig, OmegaConf

from parapolicy.errors import RolloutConfigError
from parapolicy.eval.compare import COMPARE_SCHEDULE_KEYS

# cfg nodes whose keys are free-form: anything a user appends there is meant
FREE_FORM = ("env.kwargs", "hydra")


def check_command(overrides: list[str], multirun: bool = False) -> list[list[str]]:
    """Compose every job of ``parapolicy-rollout [-m] OVERRIDES`` and check it; returns the jobs'
    override lists (one for a plain run). Raises ``RolloutConfigError`` (one line) on the first
    mistake."""
    from hydra import initialize_config_dir

    from parapolicy.eval.build import CONFIG_DIR

    parsed = _parse(overrides)
    jobs = _split(parsed) if multirun else [list(overrides)]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        for job in jobs:
            cfg = _compose(job)
            check_keys(cfg, _compose([o for o in job if _is_choice(o)]))
            check_job(cfg)
        hydra = _compose(jobs[0], hydra=True).hydra
        check_writable_dir(str(hydra.sweep.dir if multirun else hydra.run.dir),
                           "hydra.sweep.dir" if multirun else "hydra.run.dir")
    return jobs


def check_job(cfg) -> None:
    """The settings one composed job can be refused for without loading its checkpoint."""
    from parapolicy.eval.build import sampler_settings
    from parapolicy.eval.run import check_settings
    from parapolicy.samplers import make_sampler

    from parapolicy.errors import SamplerConfigError

    check_settings(cfg)
    for key in ("sampler", "compare_sampler"):
        if cfg.get(key):
            name, settings = sampler_settings(cfg[key])
            for schedule_key in COMPARE_SCHEDULE_KEYS if key == "compare_sampler" else ():
                settings.pop(schedule_key, None)
            try:
                make_sampler(name, **settings)
            except SamplerConfigError as exc:
                raise RolloutConfigError(f"{key}: {exc}") from None
    if cfg.get("controller") and cfg.controller.mode:
        from parapolicy.errors import ControllerConfigError
        from parapolicy.eval.realtime import realtime_settings

        try:
            realtime_settings(cfg.controller)
        except ControllerConfigError as exc:
            raise RolloutConfigError(f"controller: {exc}") from None


def check_keys(cfg, reference) -> None:
    """Every key of ``cfg`` must exist in ``reference`` (the same group choices, no key overrides):
    a key appended with ``+`` that nothing reads is a typo, not a setting."""
    known = set(_paths(reference))
    for path in _paths(cfg):
        if path in known or path.startswith(tuple(p + "." for p in FREE_FORM)) or path.startswith("compare_sampler"):
            continue
        raise unknown_key(path, OmegaConf.select(cfg, path), reference)
    compare = cfg.get("compare_sampler")
    if compare:
        from parapolicy.samplers import SAMPLERS

        if "name" not in compare:
            raise RolloutConfigError("compare_sampler needs a name, e.g. +compare_sampler.name=sequential")
        cls = SAMPLERS.get(str(compare.name))
        if cls is None:
            raise unknown_option("compare_sampler.name", str(compare.name), sorted(SAMPLERS), "sampler")
        allowed = {"name", *COMPARE_SCHEDULE_KEYS, *_fields(cls)}
        for key in compare:
            if key not in allowed:
                raise RolloutConfigError(f"compare_sampler.{key}: {compare.name} has no setting {key!r}"
                                         f"{_nearest(str(key), sorted(allowed))}; its settings: "
                                         f"{', '.join(sorted(allowed - {'name'}))}")


def unknown_key(path: str, value, cfg) -> RolloutConfigError:
    """One line for a key the config does not have, naming the nearest valid ones."""
    from parapolicy.samplers import SAMPLERS

    head, _, field = path.partition(".")
    if head == "sampler" and field and "." not in field:
        name = str(cfg.sampler.name)
        having = [n for n, cls in sorted(SAMPLERS.items()) if field in _fields(cls)]
        if having:
            example = "picard" if "picard" in having else having[0]
            kind = "a parallel sampler" if name == "sequential" else "a sampler that has one"
            return RolloutConfigError(f"sampler.{field}={value}: {name} has no {field}; choose {kind}, e.g. "
                                      f"sampler={example} sampler.{field}={value} (samplers with a {field}: "
                                      f"{', '.join(having)})")
        own = _fields(SAMPLERS[name]) if name in SAMPLERS else []
        return RolloutConfigError(f"sampler.{field}={value}: {name} has no setting {field!r}{_nearest(field, own)}; "
                                  f"its settings: {', '.join(own) or 'none'}")
    paths = [p for p in _paths(cfg, leaves=False) if not p.startswith("hydra")]
    leaf = path.rsplit(".", 1)[-1]
    same_name = [p for p in paths if p.rsplit(".", 1)[-1] == leaf]
    if same_name:
        return RolloutConfigError(f"unknown key {path!r} (in {path}={value}); did you mean "
                                  f"{' or '.join(f'{p}={value}' for p in same_name)}?")
    top = sorted(k for k in cfg if k != "hydra")
    return RolloutConfigError(f"unknown key {path!r} (in {path}={value}){_nearest(path, paths)}; "
                              f"top-level keys: {', '.join(top)}")


def unknown_option(group: str, value: str, options, noun: str | None = None) -> RolloutConfigError:
    noun = noun or group.split("/")[-1]
    return RolloutConfigError(f"{group}={value}: no such {noun}{_nearest(value, options)}; choose one of: "
                              f"{', '.join(options)}")


def check_writable_dir(path: str, key: str = "hydra.run.dir") -> None:
    """The output folder must be creatable and writable; probing leaves nothing behind."""
    import tempfile

    path = os.path.abspath(path)
    existing, missing = path, None
    while not os.path.exists(existing):
        existing, missing = os.path.dirname(existing), existing
    if not os.path.isdir(existing):
        raise RolloutConfigError(f"{key}={path}: {existing} is not a folder; choose a writable folder")
    try:
        if missing is None:
            os.rmdir(tempfile.mkdtemp(dir=existing))
        else:
            missing = os.path.join(existing, os.path.relpath(missing, existing).split(os.sep)[0])
            os.mkdir(missing)
            os.rmdir(missing)
    except OSError as exc:
        raise RolloutConfigError(f"{key}={path}: cannot write there ({exc.strerror}); choose a writable folder, "
                                 f"e.g. {key}=outputs/rollout/run1") from None


# ---------------------------------------------------------------- Hydra's errors, one line each
def _parse(overrides):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for raw in overrides:
        try:
            parser.parse_overrides([raw])
        except OverrideParseException as exc:
            raise RolloutConfigError(f"cannot parse {raw!r}: {_first_line(exc)} (override grammar: "
                                     f"https://hydra.cc/docs/advanced/override_grammar/basic)") from None
    return parser.parse_overrides(list(overrides))


def _split(parsed) -> list[list[str]]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _is_choice(override: str) -> bool:
    """A group choice (``sampler=picard``, ``hydra/launcher=joblib``), not a key."""
    key = override.split("=", 1)[0].lstrip("+~")
    return ("." not in key and key in _groups()) or "/" in key


def _groups() -> set:
    from parapolicy.eval.build import CONFIG_DIR

    return {d for d in os.listdir(CONFIG_DIR) if os.path.isdir(os.path.join(CONFIG_DIR, d))} | {"sampler"}


def _compose(overrides, hydra: bool = False):
    from hydra import compose
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    try:
        return compose("rollout", overrides=list(overrides), return_hydra_config=hydra)
    except MissingConfigException as exc:
        missing = str(exc.missing_cfg_file or "")
        group, _, value = missing.rpartition("/")
        if group and exc.options is not None:
            raise unknown_option(group, value, list(exc.options)) from None
        raise RolloutConfigError(_first_line(exc)) from None
    except ConfigCompositionException as exc:
        cause = exc.__cause__
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and getattr(cause, "full_key", None):
            path = str(cause.full_key)
            value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == path), "?")
            raise unknown_key(path, value, compose("rollout", overrides=[o for o in overrides if _is_choice(o)])) \
                from None
        text = str(exc)
        if text.startswith("Ambiguous value"):
            raise RolloutConfigError(f"{_first_line(exc)}: to run one job per value add -m (multirun); for a list "
                                     f"write key=[a,b], for a string quote it") from None
        raise RolloutConfigError(" ".join(text.split())) from None


def _paths(cfg, prefix: str = "", leaves: bool = True):
    """Dotted key paths of a config (leaves, or every node with ``leaves=False``)."""
    for key in cfg:
        path = f"{prefix}{key}"
        node = cfg._get_node(key) if isinstance(cfg, DictConfig) else None
        if isinstance(node, DictConfig) and not node._is_none() and len(node):
            if not leaves:
                yield path
            yield from _paths(node, path + ".", leaves)
        else:
            yield path


def _fields(cls) -> list:
    return [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")] \
        if dataclasses.is_dataclass(cls) else []


def _nearest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=3, cutoff=0.6)
    return f" (nearest: {', '.join(close)})" if close else ""


def _first_line(exc) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
