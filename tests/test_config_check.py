"""Config mistakes on the rollout command line: one line naming the bad key or value and the
nearest valid ones, found before anything is written (the CLI exits 2 with it: test_rollout_cli)."""

import os

import pytest

from parapolicy.errors import RolloutConfigError
from parapolicy.eval.config_check import check_command
from parapolicy.eval.build import CONFIG_DIR
from parapolicy.samplers import SAMPLERS

ENVS = sorted(name[:-5] for name in os.listdir(os.path.join(CONFIG_DIR, "env")) if name.endswith(".yaml"))
MISTAKES = [
    (["sampler=nonexistent"], f"sampler=nonexistent: no such sampler; choose one of: {', '.join(sorted(SAMPLERS))}"),
    (["sampler=picardd"], "sampler=picardd: no such sampler (nearest: picard"),
    (["env=nonexistent"], f"env=nonexistent: no such env; choose one of: {', '.join(ENVS)}"),
    (["sampler.window=0"], "sampler.window=0: auto has no window; choose a sampler that has one, e.g. "
                           "sampler=picard sampler.window=0 (samplers with a window: "),
    (["sampler=sequential", "sampler.window=0"],
     "sampler.window=0: sequential has no window; choose a parallel sampler, e.g. sampler=picard sampler.window=0 "
     "(samplers with a window: "),
    (["sampler=piadm", "sampler.tolerance=0.1"], "sampler.tolerance=0.1: piadm has no tolerance; choose a sampler "
                                                 "that has one, e.g. sampler=picard"),
    (["sampler=picard", "+sampler.windw=3"], "sampler.windw=3: picard has no setting 'windw' (nearest: window)"),
    (["device=cuda"], "unknown key 'device' (in device=cuda); did you mean policy.device=cuda?"),
    (["policy.devic=cuda"], "unknown key 'policy.devic' (in policy.devic=cuda) (nearest: policy.device"),
    (["+n_episode=5"], "unknown key 'n_episode' (in n_episode=5) (nearest: n_episodes"),
    (["hydra/launcher=jobblib"], "hydra/launcher=jobblib: no such launcher (nearest: joblib)"),
    (["+compare_sampler.name=sequentl"], "compare_sampler.name=sequentl: no such sampler (nearest: sequential)"),
    (["+compare_sampler.name=sequential", "+compare_sampler.window=4"],
     "compare_sampler.window: sequential has no setting 'window'"),
    (["n_episodes=1,2"], "Ambiguous value for argument 'n_episodes=1,2': to run one job per value add -m"),
    (["sampler.window=["], "cannot parse 'sampler.window=[': "),
    (["n_episodes=0"], "n_episodes must be an integer >= 1, got 0"),
    (["sampler=picard", "sampler.window=-1"], "sampler: picard window must be an integer >= 1, got -1"),
    (["controller.mode=rtcc"], "controller: realtime mode must be one of"),
    (["controller.mode=rtc", "+compare_sampler.name=sequential"], "controller.mode and compare_sampler cannot be "
                                                                  "combined"),
]


@pytest.mark.parametrize("overrides, message", MISTAKES, ids=[" ".join(o) for o, _ in MISTAKES])
def test_each_mistake_is_one_line_naming_the_key_and_the_nearest_valid_ones(overrides, message):
    with pytest.raises(RolloutConfigError) as info:
        check_command(overrides)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text, text


def test_a_multirun_is_checked_job_by_job_before_any_runs():
    jobs = check_command(["sampler=picard,newton_picard", "sampler.window=4,16"], multirun=True)
    assert len(jobs) == 4 and ["sampler=newton_picard", "sampler.window=16"] in jobs
    with pytest.raises(RolloutConfigError, match="^sampler.window=4: sequential has no window"):
        check_command(["sampler=picard,sequential", "sampler.window=4"], multirun=True)


def test_valid_commands_pass_including_free_form_env_kwargs_and_the_compare_schedule():
    assert check_command([]) == [[]]
    check_command(["env=toy", "+env.kwargs.fault=1"])
    check_command(["sampler=quasi_newton", "+compare_sampler.name=sequential", "+compare_sampler.scheduler=ddim",
                   "+compare_sampler.num_inference_steps=16"])


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_an_unwritable_run_dir_is_one_line_and_probing_leaves_nothing(tmp_path, where):
    if where == "proc" and not os.path.isdir("/proc"):
        pytest.skip("no /proc here")
    (tmp_path / "file").write_text("x")
    path = f"{tmp_path}/file/run" if where == "under_a_file" else "/proc/x/run"
    with pytest.raises(RolloutConfigError, match=f"^hydra.run.dir={path}: "):
        check_command([f"hydra.run.dir={path}"])
    check_command([f"hydra.run.dir={tmp_path}/new/run"])
    assert sorted(os.listdir(tmp_path)) == ["file"]  # the writable probe made and removed its folder
    with pytest.raises(RolloutConfigError, match=f"^hydra.sweep.dir={tmp_path}/file: "):
        check_command([f"hydra.sweep.dir={tmp_path}/file", "sampler=picard,sequential"], multirun=True)


def test_the_env_choices_named_are_the_shipped_env_configs():
    assert {"auto", "toy", "pusht_keypoints", "robomimic_lift", "robomimic_transport_image"} <= set(ENVS)
