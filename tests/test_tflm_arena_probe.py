"""The TFLM arena search probes each arena in a child process, so a crash there is a failed probe."""

from __future__ import annotations

import os
import signal

import pytest

from firmware_export.device.tflm_runtime import succeeds_in_child

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def test_a_probe_that_crashes_counts_as_failed_and_the_caller_lives_on():
    def crash() -> bool:
        os.kill(os.getpid(), signal.SIGSEGV)
        return True

    assert succeeds_in_child(crash) is False
    assert succeeds_in_child(lambda: True) is True


def test_a_probe_that_fails_or_raises_counts_as_failed():
    def raises() -> bool:
        raise RuntimeError("arena too small")

    assert succeeds_in_child(lambda: False) is False
    assert succeeds_in_child(raises) is False


def test_the_probe_runs_in_another_process():
    parent = os.getpid()
    assert succeeds_in_child(lambda: os.getpid() != parent) is True
