"""Callback dispatcher: start hooks in order, end hooks reversed, failure policy per callback."""

from __future__ import annotations

import logging

import pytest

from brevetti_pipe.reporting import CallbackList, JobCallback


def _make(name: str, log: list[str], required: bool = False, fail: bool = False):
    class _CB(JobCallback):
        pass

    _CB.name, _CB.required = name, required

    def on_job_start(self, **kw):
        log.append(f"start:{name}")
        if fail:
            raise RuntimeError(f"{name} broke")

    def on_job_end(self, **kw):
        log.append(f"end:{name}")

    _CB.on_job_start, _CB.on_job_end = on_job_start, on_job_end
    return _CB()


def test_start_in_order_end_reversed():
    log: list[str] = []
    cbs = CallbackList([_make("a", log), _make("b", log)])
    cbs.on_job_start(job=None)
    cbs.on_job_end(job=None, status="completed")
    assert log == ["start:a", "start:b", "end:b", "end:a"]


def test_optional_callback_warns_once_and_required_one_fails(caplog):
    log: list[str] = []
    cbs = CallbackList([_make("ping", log, fail=True), _make("after", log)])
    with caplog.at_level(logging.WARNING):
        cbs.on_job_start(job=None)
        cbs.on_job_start(job=None)
    assert log.count("start:after") == 2
    assert sum("ping" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(RuntimeError, match="must broke"):
        CallbackList([_make("must", log, required=True, fail=True)]).on_job_start(job=None)


def test_hooks_accept_unknown_keyword_arguments():
    JobCallback().on_epoch_end(job=None, epoch=1, metrics={}, something_new=True)
