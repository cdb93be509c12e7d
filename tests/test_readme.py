"""README.md and docs/ stay true: every Python block runs as pasted, every command line is
composed or checked, every link and file path resolves, the numbers match their sources, the
sampler table matches the registry, and mkdocs builds the pages strictly."""

import argparse
import glob
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from parapolicy.eval.build import CONFIG_DIR, resolve_checkpoint
from parapolicy.eval.config_check import check_command
from parapolicy.eval.report import COLUMNS
from parapolicy.eval.run import run_rollout
from parapolicy.eval.sweep import load_sweep, planned_runs
from parapolicy.samplers import SAMPLERS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
TEXT = {page: open(os.path.join(ROOT, page)).read() for page in PAGES}
README = TEXT["README.md"]
PYPROJECT = open(os.path.join(ROOT, "pyproject.toml")).read()
CI = open(os.path.join(ROOT, ".ci", "run")).read()


def blocks(text, lang):
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def section(text, title):
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def command_lines(text):
    """Every command of the bash blocks, split at ``&&``, comments dropped."""
    out = []
    for block in blocks(text, "bash"):
        for line in block.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                words = shlex.split(line, comments=True)
                while "&&" in words:
                    cut = words.index("&&")
                    out.append(words[:cut])
                    words = words[cut + 1:]
                out.append(words)
    return out


PYTHON_BLOCKS = [(page, i, code) for page in PAGES for i, code in enumerate(blocks(TEXT[page], "python"))]
COMMANDS = [(page, words) for page in PAGES for words in command_lines(TEXT[page])]


# ---------------------------------------------------------------- code runs as pasted
@pytest.fixture
def clean_registries():
    """A block may define a sampler or an env: forget them afterwards, so other tests see the
    registries as shipped."""
    import gymnasium as gym
    from hydra.core.config_store import ConfigStore

    from parapolicy.eval.build import ensure_envs_importable

    ensure_envs_importable()  # the shipped envs are registered before, so they stay
    samplers, envs = set(SAMPLERS), set(gym.registry)
    yield
    from parapolicy.samplers.registry import unregister

    for name in set(SAMPLERS) - samplers:
        unregister(name)
        ConfigStore.instance().repo["sampler"].pop(f"{name}.yaml", None)
    for env_id in set(gym.registry) - envs:
        del gym.registry[env_id]


@pytest.mark.parametrize("page, index, code", PYTHON_BLOCKS, ids=[f"{p}[{i}]" for p, i, _ in PYTHON_BLOCKS])
def test_every_python_block_runs_as_pasted(page, index, code, tmp_path, monkeypatch, clean_registries):
    monkeypatch.chdir(tmp_path)  # a fresh folder and a fresh namespace: nothing defined elsewhere
    exec(compile(code, f"{page} python block {index}", "exec"), {"__name__": "__main__"})


def test_the_quickstart_is_about_ten_lines_of_the_public_api():
    (quickstart,) = blocks(section(README, "Python quickstart"), "python")
    assert len(quickstart.strip().splitlines()) <= 14
    for call in ("parapolicy.load_policy(", "parapolicy.shipped_checkpoint(", ".set_sampler(", ".predict_action("):
        assert call in quickstart


# ---------------------------------------------------------------- commands are composed or checked
class _Parsed(Exception):
    pass


def _check_script(words, monkeypatch):
    """A ``python scripts/X.py ...`` line: its own parser accepts the arguments (nothing runs)."""
    path = os.path.join(ROOT, words[1])
    assert os.path.exists(path), words[1]
    if os.path.basename(path) == "train.py":  # a Hydra app: compose its config with the overrides
        name = words[words.index("--config-name") + 1]
        overrides = [w for w in words[2:] if w not in ("--config-name", name)]
        with initialize_config_dir(config_dir=os.path.join(ROOT, "configs", "train"), version_base=None):
            compose(name, overrides=overrides)
        return
    for method in ("parse_args", "parse_intermixed_args"):
        real = getattr(argparse.ArgumentParser, method)

        def parse(self, args=None, namespace=None, _real=real):
            _real(self, args, namespace)  # a bad argument exits 2 here
            raise _Parsed

        monkeypatch.setattr(argparse.ArgumentParser, method, parse)
    monkeypatch.setattr(sys, "argv", [path, *words[2:]])
    with pytest.raises(_Parsed):
        runpy.run_path(path, run_name="__main__")


def _check_pip(words):
    pins = [w for w in words if w.startswith(("torch==", "torchvision=="))]
    assert all(pin in CI for pin in pins), pins  # the versions CI installs
    if "--index-url" in words:
        assert words[words.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    for target in (w for w in words if w.startswith(".")):
        for extra in re.findall(r"\[(.*)\]", target):
            for name in extra.split(","):
                assert f"\n{name} = [" in PYPROJECT, name


_CHECKED = {}  # (args, multirun) -> jobs of a rollout command line check_command passed in this run
_RESOLVED = set()  # job override lists whose default checkpoint was resolved to a file in this run


def _check_command_once(args, multirun):
    """``check_command(args, multirun=multirun)``, run once per distinct command in this test run:
    the same command line appears on several pages (and in a test below). The check is
    deterministic, only a command that passed is remembered, and callers get fresh copies."""
    key = (tuple(args), multirun)
    if key not in _CHECKED:
        _CHECKED[key] = check_command(list(args), multirun=multirun)  # composes every job
    return [list(job) for job in _CHECKED[key]]


@pytest.mark.parametrize("page, words", COMMANDS, ids=[f"{p}: {' '.join(w)}" for p, w in COMMANDS])
def test_every_command_line_is_composed_or_checked(page, words, monkeypatch):
    head = words[0]
    if head == "parapolicy-rollout":
        args = words[1:]
        if args == ["--help"]:
            return
        jobs = _check_command_once([a for a in args if a != "-m"], "-m" in args)  # composes every job
        if not any(a.startswith("checkpoint=") for a in args) and tuple(jobs[0]) not in _RESOLVED:
            with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
                assert os.path.exists(resolve_checkpoint(compose("rollout", overrides=jobs[0])))
            _RESOLVED.add(tuple(jobs[0]))
    elif head == "pip":
        _check_pip(words)
    elif words[:3] == ["python", "-m", "pytest"]:
        for marker in words[words.index("-m", 2) + 1:] if words.count("-m") > 1 else []:
            assert f'"{marker}:' in PYPROJECT, marker
    elif head == "python" and words[1].startswith("scripts/"):
        _check_script(words, monkeypatch)
    elif words[:2] == ["wandb", "sweep"]:
        load_sweep(os.path.join(ROOT, words[2]))
    elif words[:2] == ["wandb", "agent"]:
        assert words[-1] == "<sweep-id>"
    else:
        assert words == ["mkdocs", "build", "--strict"], f"no check for this command: {words}"


@pytest.mark.slow
def test_the_local_sweep_command_runs_and_counts_its_runs(toy_ckpt, tmp_path):
    (line,) = [w for _, w in COMMANDS if w[:2] == ["python", "scripts/sweep_local.py"]]
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "envs")]))
    proc = subprocess.run([sys.executable, *line[1:], "--max-runs", "1", "--dir", str(tmp_path), f"checkpoint={toy_ckpt}",
                           "env=toy", "n_episodes=1", "logger=disabled"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "picard_window.yaml: 1 run in" in proc.stdout
    assert "sweep run 1 of 1: sampler=picard sampler.tolerance=0.05 sampler.window=4 " in proc.stdout
    assert "sweep run 1 of 1: pass 3/3 deviation check" in proc.stderr  # the rollout's bars carry the label
    assert "1 of 1 runs wrote results" in proc.stdout and "run 1 a picard " in proc.stdout
    assert "run-0: sampler=picard sampler.tolerance=0.05 sampler.window=4  rollout/latency_at_equal_score_ms=" in \
        proc.stdout
    assert json.load(open(tmp_path / "0" / "results.json"))["paired"]["sampler_b"] == {"name": "sequential"}


def test_the_multirun_example_expands_to_every_sampler_window_pair():
    (line,) = [w for _, w in COMMANDS if "sampler.window=4,16,100" in w and w[1] == "-m"][:1]
    jobs = _check_command_once(line[2:], multirun=True)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        got = {(c.sampler.name, c.sampler.window) for c in (compose("rollout", overrides=j) for j in jobs)}
    assert got == {(s, w) for s in ("picard", "newton_picard") for w in (4, 16, 100)}
    assert "multirun: 6 runs" in README


def test_set_up_commands_name_what_pyproject_and_ci_install():
    lines = command_lines(section(README, "Set-up on a fresh machine"))
    torch_pins = {a for c in lines for a in c if a.startswith(("torch==", "torchvision=="))}
    assert torch_pins == {"torch==2.14.1", "torchvision==0.29.1"} and all(p in CI for p in torch_pins)
    assert 'pip install -q -e ".[dev]"' in CI and "\ndev = [" in PYPROJECT
    assert ["parapolicy-rollout"] in [c[-1:] for c in lines]  # the main job: the CLI with its defaults
    assert 'parapolicy-rollout = "parapolicy.cli.rollout:main"' in PYPROJECT
    assert "\npython -m pytest -q\n" in README and "python -m pytest -q -m slow" in CI  # CI runs both


def test_the_readme_is_a_quickstart():
    assert len(README.splitlines()) <= 150


# ---------------------------------------------------------------- facts match their sources
def test_the_main_jobs_expected_numbers_are_the_checkpoint_cards():
    card = open(os.path.join(ROOT, "parapolicy", "assets", "checkpoints", "pusht_keypoints_unet.md")).read()
    assert "`parapolicy-rollout sampler=sequential n_episodes=50 seed=100000 logger=disabled`" in card
    assert "- sampler: auto " in open(os.path.join(ROOT, "parapolicy", "configs", "rollout.yaml")).read()
    setup = section(README, "Set-up on a fresh machine")
    assert "`sampler=auto` (the default)" in setup and "`sampler=auto chose sequential at batch 50: ...`" in setup
    score, success = re.search(r"\n\| ([0-9.]+) \| ([0-9.]+) \| 50 \|", card).groups()
    assert f"score **{score}** and success **{round(100 * float(success))}%**" in setup


def test_the_three_sequential_pusht_numbers_name_their_setting_and_match_their_sources():
    bench = open(os.path.join(ROOT, "benchmarks", "README.md")).read()
    rows = section(bench, "Sequential PushT in three settings")
    card = open(os.path.join(ROOT, "parapolicy", "assets", "checkpoints", "pusht_keypoints_unet.md")).read()
    realtime = open(os.path.join(ROOT, "benchmarks", "realtime_pusht.md")).read()
    samplers = open(os.path.join(ROOT, "benchmarks", "samplers.md")).read()
    assert "| 0.912 / 0.78 | `parapolicy-rollout` (the main job)" in rows and "| 0.912 | 0.78 | 50 |" in card
    assert "| 0.913 / 0.86 | the simulated clock in `sync` mode" in rows
    assert "| any (env waits) | sync | 50 | 0.913 ± 0.074 | 0.86 |" in realtime
    assert "| 0.864 / - | one robot at a time through the wall-clock `Controller`" in rows
    assert "| sequential | - | 100 | 100 | 1157 | 0.864 | 0 | - |" in samplers
    assert "0.912 (0.837-0.986)" in samplers and "(0.837-0.986, `samplers.md`)" in rows


def test_the_sampler_table_lists_every_registered_sampler_with_its_defaults_and_exactness():
    rows = [line.split("|")[1:-1] for line in section(README, "Choosing a sampler").splitlines()
            if line.startswith("| `")]
    assert sorted(r[0].strip().strip("`") for r in rows) == sorted(SAMPLERS)
    for name, exact, knobs, _, measured in rows:
        cls = SAMPLERS[name.strip().strip("`")]
        assert exact.strip().startswith("yes") == cls.exact, name
        stated = dict(re.findall(r"`(\w+)=([^`]+)`", knobs))
        config = {k: v for k, v in cls().config().items() if k != "name"}
        assert set(stated) == set(config), name  # every knob named, none invented
        assert all(stated[k] == str(v) for k, v in config.items()), (name, stated, config)
        assert "](benchmarks/" in measured


def test_the_sweep_run_counts_in_the_docs_are_the_files():
    cli = TEXT["docs/cli.md"]
    for path in glob.glob(os.path.join(ROOT, "configs", "sweeps", "*.yaml")):
        rel = os.path.relpath(path, ROOT)
        (count,) = re.findall(rf"\| `{re.escape(rel)}` \| (\d+) ", cli)
        assert int(count) == planned_runs(load_sweep(path)), rel


def test_the_summary_table_example_has_the_real_columns_and_aligns():
    (example,) = [b for b in blocks(TEXT["docs/cli.md"], "text") if "episodes completed" in b]
    header, _, *rows = example.splitlines()[1:]
    assert header.split()[0] == "sampler" and all(head in header for head, _, _ in COLUMNS)
    assert header.index(COLUMNS[-1][0]) + len(COLUMNS[-1][0]) + 2 == header.index("settings")
    for head, _, _ in COLUMNS:
        end = header.index(head) + len(head)
        for row in rows[:2]:
            assert row[end - 1] != " " and row[end] == " ", (head, row)


def test_the_results_json_example_has_exactly_the_written_keys(toy_ckpt, tmp_path):
    (example,) = blocks(TEXT["docs/cli.md"], "json")
    shown = json.loads(example)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("rollout", overrides=[f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=1", "logger=disabled",
                                            "progress=false"])
    written = run_rollout(cfg, str(tmp_path))
    assert list(shown) == list(json.load(open(tmp_path / "results.json")))
    for key in ("policy", "latency_chunk_ms", "metrics", "inference"):
        assert set(shown[key]) == set(written[key]), key


# ---------------------------------------------------------------- links and paths resolve
def _targets(page):
    text = TEXT[page]
    links = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http", "#"))]
    paths = re.findall(r"`((?:benchmarks|scripts|tests|parapolicy|envs|configs|docs)/[^`\s<*]*)`", text)
    base = os.path.dirname(page)
    return ([os.path.normpath(os.path.join(base, t)) for t in links if t],
            [p.split(":")[0] for p in paths if re.search(r"\.\w+$", p.split(":")[0])])  # files, not gym ids


@pytest.mark.parametrize("page", PAGES)
def test_every_link_and_named_file_exists(page):
    links, paths = _targets(page)
    for target in links + paths:
        assert os.path.exists(os.path.join(ROOT, target)), f"{page} names {target}, which does not exist"


def test_mkdocs_nav_lists_every_page(tmp_path):
    import yaml

    config = yaml.safe_load(open(os.path.join(ROOT, "mkdocs.yml")))
    nav = {f"docs/{list(entry.values())[0]}" for entry in config["nav"]}
    pages = set(PAGES) - {"README.md"}
    assert pages == nav


def test_mkdocs_builds_the_docs_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    mkdocs = shutil.which("mkdocs") or os.path.join(os.path.dirname(sys.executable), "mkdocs")
    proc = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "cli" / "index.html").exists()
