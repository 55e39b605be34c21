"""The shared metrics log (rlhfkit.metrics.MetricsLog): JSONL round trip, fresh vs resumed runs,
and the TensorBoard mirror when tensorboard is installed."""

from __future__ import annotations

import importlib.util
import json

import pytest

from rlhfkit.metrics import MetricsLog


def test_records_round_trip_and_a_resumed_log_appends(tmp_path):
    log = MetricsLog(tmp_path / "run", step_key="env_steps", fresh=True)
    log.write({"env_steps": 10, "return": -3.5})
    log.write({"env_steps": 20, "return": -1.0, "note": "text is kept"})
    log.close()
    again = MetricsLog(tmp_path / "run", step_key="env_steps")  # resumed: appends
    again.write({"env_steps": 30, "return": 0.5})
    again.close()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"env_steps": 10, "return": -3.5}, {"env_steps": 20, "return": -1.0, "note": "text is kept"},
                    {"env_steps": 30, "return": 0.5}]
    fresh = MetricsLog(tmp_path / "run", fresh=True)  # a new run starts empty
    fresh.write({"step": 1, "loss": 0.69})
    fresh.close()
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == '{"step": 1, "loss": 0.69}\n'



def test_numbers_are_mirrored_to_tensorboard(tmp_path):
    if importlib.util.find_spec("tensorboard") is None:  # optional at run time; the dev extras install it
        pytest.skip("tensorboard not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path, step_key="env_steps", fresh=True)
    log.write({"env_steps": 100, "return": -3.5, "name": "a"})
    log.write({"env_steps": 200, "return": -1.0})
    log.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert events.Tags()["scalars"] == ["return"]  # the step key and text are not plotted
    assert [(e.step, e.value) for e in events.Scalars("return")] == [(100, -3.5), (200, -1.0)]
