"""Continuing an interrupted run: the state after its last completed phase comes back (model,
front end, memory, sampler, generators, steps' state, phase records) and whatever an interrupted
phase left goes (edgecl.run_state)."""

from __future__ import annotations

from typing import Any

import torch

from edgecl.device import device_change_note
from edgecl.errors import EdgeclError
from edgecl.results import PhaseRecord, write_results
from edgecl.run_state import drop_uncommitted, load_phase_weights, load_state, restore_state


def resume_run(run, previous: dict[str, Any] | None) -> int:
    """Restore `run` (an edgecl.trainer.ContinualRun) to the state after its last completed
    phase; returns the phase to start at. `previous`: the interrupted run's results.json, if it
    wrote one."""
    done = drop_uncommitted(run.run_dir)
    if done is None:
        run.log("resuming at phase 0: no phase of the interrupted run had completed")
        return 0
    note_thread_change(run.log, previous, done)
    if (note := device_change_note(previous, done, run.device)) is not None:
        run.log(note)
    payload = load_state(run.run_dir, done)
    if load_phase_weights(run.model, run.run_dir, done):
        run.open_features()  # the run's own front end (see load_phase_weights): its features
        run.log(f"resuming with the front end the run started with (stft_impl "
                f"{run.model.frontend.stft_impl!r})")
    _restore_steps(run, payload)
    run.records = [PhaseRecord.from_dict(r) for r in payload["records"]]
    restore_state(payload, memory=run.memory, sampler=run.sampler, run_rng=run.rng)
    write_results(run.run_dir, run.results(complete=False))
    run.log(f"resuming at phase {done + 1}: phases 0-{done} of the interrupted run are "
            f"complete" if done + 1 < len(run.phases) else
            f"resuming after phase {done}: every phase is complete, writing the results")
    return done + 1


def note_thread_change(log, previous: dict[str, Any] | None, done: int) -> None:
    """Say so when the phases done ran on another thread count: torch's float sums follow the
    thread count, so the rest of the run will not match an uninterrupted one bit for bit."""
    ran_on = ((previous or {}).get("provenance") or {}).get("threads")
    now = torch.get_num_threads()
    if isinstance(ran_on, int) and ran_on != now:
        log(f"note: phases 0-{done} ran on {ran_on} thread(s), this session on {now}; "
            f"the results will differ in the last bits from an uninterrupted run "
            f"(--threads {ran_on} matches it)")


def _restore_steps(run, payload: dict[str, Any]) -> None:
    """Each step's state back from the payload; an entry that does not fit (a damaged file) is
    a one-line error naming the file."""
    try:
        for step in run.steps:
            step.restore(run, payload)
    except EdgeclError:
        raise
    except Exception as error:  # an entry of the right type holding values that do not fit
        detail = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
        raise EdgeclError(f"{payload.get('path', 'state.pt')}: unreadable run state ({detail}); "
                          f"pass --overwrite to start the run again") from None
