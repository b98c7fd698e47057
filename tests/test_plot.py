"""``optcore plot``: argument parsing, the missing-matplotlib message, and a real PNG when possible."""

import builtins
import importlib.util

import numpy as np
import pytest

import optcore
from optcore import cli, plot


def test_schedule_values_match_the_schedule():
    schedule = optcore.warmup_cosine_decay_schedule(0.0, 1.0, 2, 10)
    got = plot.schedule_values(schedule, 12)
    expected = [float(schedule(step)) for step in range(12)]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(plot.schedule_values(optcore.constant_schedule(0.3), 3), [0.3] * 3, rtol=1e-6)
    with pytest.raises(ValueError, match="steps"):
        plot.schedule_values(schedule, 0)


def test_params_go_to_the_schedules_that_take_them():
    names = ["warmup_cosine_decay_schedule", "cosine_decay_schedule", "cosine_decay_schedule"]
    specs = ["init_value=0", "peak_value=1e-3", "decay_steps=100", "warmup_steps=10", "2.alpha=0.5",
             "cosine_decay_schedule.exponent=2"]
    kwargs = plot.parse_params(specs, names)
    assert kwargs[0] == dict(init_value=0, peak_value=1e-3, decay_steps=100, warmup_steps=10)
    assert kwargs[1] == dict(init_value=0, decay_steps=100, exponent=2)
    assert kwargs[2] == dict(init_value=0, decay_steps=100, alpha=0.5, exponent=2)
    assert plot.parse_params(["boundaries_and_scales={10: 0.5}", "init_value=1."], ["piecewise_constant_schedule"]) == [
        dict(boundaries_and_scales={10: 0.5}, init_value=1.0)
    ]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        plot.parse_params(["init_value"], names)
    with pytest.raises(ValueError, match="no schedule given takes"):
        plot.parse_params(["momentum=0.9"], names)


def test_cli_says_how_to_install_matplotlib_when_missing(monkeypatch, tmp_path, capsys):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    output = tmp_path / "lr.png"
    code = cli.main(["plot", "linear_schedule", "--steps", "20", "--param", "init_value=1.0", "--param", "end_value=0.0",
                     "--param", "transition_steps=10", "-o", str(output)])
    assert code == 1
    assert 'pip install "optcore[plot]"' in capsys.readouterr().err
    assert not output.exists()


def test_cli_reports_bad_arguments(capsys):
    assert cli.main(["plot", "linear_schedule", "--steps", "5", "--param", "init_value=1.0"]) == 2
    assert "optcore plot:" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed")
def test_cli_writes_a_png_with_several_schedules(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    output = tmp_path / "schedules.png"
    code = cli.main(
        ["plot", "warmup_cosine_decay_schedule", "exponential_decay", "--steps", "50",
         "--param", "init_value=0.0", "--param", "warmup_cosine_decay_schedule.init_value=0.0",
         "--param", "exponential_decay.init_value=1e-3", "--param", "peak_value=1e-3",
         "--param", "warmup_steps=5", "--param", "decay_steps=50", "--param", "transition_steps=10",
         "--param", "decay_rate=0.5", "-o", str(output), "--title", "two schedules"]
    )
    assert code == 0, capsys.readouterr().err
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert output.stat().st_size > 1000
