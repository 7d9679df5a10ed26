"""Hot reload of languages.yaml: a valid change takes effect, an invalid one keeps the previous config."""

from __future__ import annotations

import logging
import os
import signal

from daemon.scheduler.reload import ReloadingLanguages


def test_valid_change_takes_effect_and_invalid_keeps_previous(tmp_path, caplog):
    path = tmp_path / "languages.yaml"
    path.write_text("languages:\n  sw: {theta: 0.12}\n")
    langs = ReloadingLanguages(path)
    assert langs.current.get("sw").theta == 0.12
    assert langs.maybe_reload() is False  # unchanged file

    path.write_text("languages:\n  sw: {theta: 0.2}\n  yo: {}\n")
    assert langs.maybe_reload() is True
    assert langs.current.get("sw").theta == 0.2 and langs.current.enabled == ["sw", "yo"]

    path.write_text("languages:\n  sw: {theta: 3}\n  Yoruba: {}\n")
    with caplog.at_level(logging.ERROR, logger="daemon.scheduler.reload"):
        assert langs.maybe_reload() is False
    assert langs.current.get("sw").theta == 0.2  # previous config still in force
    assert langs.rejected == 1 and langs.reloads == 1
    lines = [r.getMessage() for r in caplog.records]
    assert "  languages.Yoruba: write this language as 'yo' (see compass/langcodes.py)" in lines
    assert ("  languages.sw.theta: got 3; Input should be less than or equal to 1 "
            "(allowed: a JS divergence threshold in bits, in (0, 1])") in lines

    path.write_text("languages:\n  sw: {theta: 0.1}\n")  # fixed file: picked up
    assert langs.maybe_reload() is True and langs.current.get("sw").theta == 0.1


def test_sighup_requests_a_reload(tmp_path):
    path = tmp_path / "languages.yaml"
    path.write_text("languages:\n  en: {}\n")
    langs = ReloadingLanguages(path)
    old = signal.getsignal(signal.SIGHUP)
    try:
        langs.install_sighup()
        os.kill(os.getpid(), signal.SIGHUP)
        assert langs._requested.is_set()
        # same content: the forced reload runs but nothing changes
        assert langs.maybe_reload() is False and not langs._requested.is_set()
    finally:
        signal.signal(signal.SIGHUP, old)


def test_deleted_file_keeps_previous_config(tmp_path, caplog):
    path = tmp_path / "languages.yaml"
    path.write_text("languages:\n  en: {}\n")
    langs = ReloadingLanguages(path)
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="daemon.scheduler.reload"):
        assert langs.maybe_reload() is False
    assert langs.current.enabled == ["en"]
    assert any("file not found" in r.getMessage() for r in caplog.records)
