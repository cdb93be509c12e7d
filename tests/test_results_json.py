"""results.json is written safely: 0644, fsync before rename, nothing left on failure, NaN as null."""

import json
import os
import stat

import numpy as np
import pytest

from parapolicy.metrics import write_json_atomic


def test_file_is_created_0644_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        path = write_json_atomic(str(tmp_path / "results.json"), {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_data_and_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("rename") or real_replace(a, b))
    write_json_atomic(str(tmp_path / "results.json"), {"a": 1})
    assert events == ["fsync", "rename", "fsync"]


def test_a_payload_that_does_not_encode_leaves_no_file(tmp_path):
    (tmp_path / "results.json").write_text('{"old": true}\n')
    with pytest.raises(TypeError):
        write_json_atomic(str(tmp_path / "results.json"), {"bad": object()})
    assert os.listdir(tmp_path) == ["results.json"]
    assert json.load(open(tmp_path / "results.json")) == {"old": True}


def test_a_failing_rename_leaves_no_temp_file(tmp_path, monkeypatch):
    def refuse(a, b):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(str(tmp_path / "results.json"), {"a": 1})
    assert os.listdir(tmp_path) == []


def test_non_finite_numbers_are_written_as_null(tmp_path):
    payload = {"nan": float("nan"), "inf": float("-inf"), "np_nan": np.float32("nan"), "np_inf": np.float64("inf"),
               "array": np.array([1.0, np.nan]), "nested": [{"x": np.nan}], "ok": np.int64(3), "flag": np.bool_(True)}
    path = write_json_atomic(str(tmp_path / "results.json"), payload)
    text = open(path).read()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": None, "np_nan": None, "np_inf": None, "array": [1.0, None],
                                "nested": [{"x": None}], "ok": 3, "flag": True}
