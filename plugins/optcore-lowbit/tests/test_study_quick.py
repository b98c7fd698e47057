"""The quality study's ``--quick`` run: it runs, writes its outputs, and its numbers make sense.

The study is a script (``study/run_study.py``); it is loaded here from its file
and its ``main`` called in this process (one JAX start-up for all the tests;
its modules are named ``lowbit_*`` so they cannot shadow others). The main
test uses the two tasks that need no scikit-learn; the digits task has its own
test, skipped when scikit-learn is missing.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

import optcore

STUDY_DIR = Path(__file__).resolve().parents[1] / "study"


def _load(script: str, name: str):
    spec = importlib.util.spec_from_file_location(name, STUDY_DIR / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STUDY = _load("run_study.py", "lowbit_run_study")


def _registered(name: str) -> bool:
    try:
        optcore.get(name)
    except LookupError:
        return False
    return True


# The low-bit optimizer when this plugin provides it; otherwise a float32 peer,
# so the harness itself is still checked.
PEER = "adamw_8bit" if _registered("adamw_8bit") else "adam"


def _run_study(out: Path, *args: str) -> dict:
    returned = STUDY.main(["--quick", "--out", str(out), *args])
    assert (out / "results.md").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"].keys() == returned["tasks"].keys()
    return results


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        return False
    return True


def _check_task(results: dict, task: str, optimizers: list[str], out: Path) -> None:
    entry = results["tasks"][task]
    assert list(entry["optimizers"]) == optimizers
    initial = {}
    for name in optimizers:
        opt = entry["optimizers"][name]
        for run in opt["runs"]:
            curves = run["train_loss"] + run["heldout_loss"] + run["step_loss"]
            assert run["finite"] and all(math.isfinite(v) for v in curves), (task, name)
            assert len(run["step_loss"]) == entry["steps"]
            assert len(run["train_loss"]) == len(run["eval_steps"]) == entry["steps"] // entry["eval_every"] + 1
            # Same seed, same initial parameters for every optimizer.
            initial.setdefault(run["seed"], run["train_loss"][0])
            assert run["train_loss"][0] == initial[run["seed"]], (task, name)
    # float32 adamw trains: the final training loss is well below the initial one, on every seed.
    for run in entry["optimizers"]["adamw"]["runs"]:
        assert run["final_train_loss"] < 0.8 * run["train_loss"][0], (task, run)
    summary = entry["summary"]
    assert summary["adamw"]["rel_diff_train"] == 0.0 and summary["adamw"]["verdict"] == "reference"
    for name in optimizers:
        s = summary[name]
        expected = s["final_train_loss_mean"] / summary["adamw"]["final_train_loss_mean"] - 1
        assert math.isclose(s["rel_diff_train"], expected, rel_tol=1e-12, abs_tol=1e-15)
    # float32 adamw's state: two float32 moments per parameter, and two int32 step
    # counts (the moments' bias correction and the learning-rate schedule).
    state = entry["optimizers"]["adamw"]["state_bytes"]
    assert state["by_dtype"] == {"float32": 8 * entry["params"]["parameters"], "int32": 8}
    assert state["total"] == 8 * entry["params"]["parameters"] + 8
    if _has_matplotlib():
        assert (out / f"{task}.png").stat().st_size > 1000
    markdown = (out / "results.md").read_text()
    assert f"## {task}:" in markdown
    for name in optimizers:
        assert f"| `{name}` |" in markdown


def test_quick_study_lm_and_logistic_regression(tmp_path):
    optimizers = ["adamw", PEER]
    results = _run_study(tmp_path, "--tasks", "charlm,logreg", "--optimizers", ",".join(optimizers), "--seeds", "0")
    for task in ("charlm", "logreg"):
        _check_task(results, task, optimizers, tmp_path)
    # Independent references for the starting points: zero weights give the uniform
    # distribution over 20 classes; the LM's small initial weights nearly the uniform
    # distribution over 256 bytes.
    logreg0 = results["tasks"]["logreg"]["optimizers"]["adamw"]["runs"][0]
    assert math.isclose(logreg0["train_loss"][0], math.log(20), rel_tol=1e-5)
    assert math.isclose(logreg0["heldout_loss"][0], math.log(20), rel_tol=1e-5)
    charlm0 = results["tasks"]["charlm"]["optimizers"]["adamw"]["runs"][0]
    assert abs(charlm0["train_loss"][0] - math.log(256)) < 0.1
    if PEER != "adam":
        # The plugin's state really is quantized: most parameters, about a quarter of the bytes.
        peer = results["tasks"]["charlm"]["optimizers"][PEER]
        assert peer["quantized_fraction"] > 0.9
        assert results["tasks"]["charlm"]["summary"][PEER]["state_bytes_ratio"] < 0.3
    else:
        assert results["tasks"]["charlm"]["optimizers"]["adam"]["quantized_fraction"] is None
    corpus = results["tasks"]["charlm"]["info"]["corpus"]
    assert corpus["bytes"] == 70_000 and len(corpus["sha256"]) == 64


def test_quick_study_digits(tmp_path):
    pytest.importorskip("sklearn", reason="the digits task needs scikit-learn (study/requirements.txt)")
    results = _run_study(tmp_path, "--tasks", "digits", "--optimizers", "adamw", "--seeds", "0")
    _check_task(results, "digits", ["adamw"], tmp_path)


def test_unknown_optimizer_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="adamw_17bit"):
        STUDY.main(["--quick", "--out", str(tmp_path), "--tasks", "logreg", "--optimizers", "adamw,adamw_17bit"])
    assert not (tmp_path / "results.json").exists()


def test_round_moments_simulates_adamw():
    """The diagnostic's simulated AdamW without rounding is float32 adamw (to float32 rounding of the
    final losses); with its second moment rounded it is not; a malformed row is an error naming it."""
    pytest.importorskip("optcore_lowbit", reason="the diagnostic rounds through optcore-lowbit's codes")
    diagnostic = _load("round_moments.py", "lowbit_round_moments")
    exact, rounded = diagnostic.compare(["none", "v=8bit"], "logreg", [0, 1], quick=True)
    np.testing.assert_allclose(exact["losses"], exact["reference"], rtol=1e-5)
    assert not np.array_equal(rounded["losses"], rounded["reference"])
    with pytest.raises(ValueError, match=r"row 'v=9bit'.*\['v=9bit'\]"):
        diagnostic.parse_row("v=9bit")


def test_round_moments_drift_of_the_second_moment():
    """--drift: rounded to nearest, the 8-bit second moment ends below the float32 one of the same gradients
    (held in place relative to its block's maximum), stochastically rounded it follows it, and bfloat16,
    held in place absolutely, ends above it (the study README's table; here the quick sizes, two seeds)."""
    pytest.importorskip("optcore_lowbit", reason="the diagnostic rounds through optcore-lowbit's codes")
    pytest.importorskip("sklearn", reason="the digits task needs scikit-learn (study/requirements.txt)")
    diagnostic = _load("round_moments.py", "lowbit_round_moments")
    nearest, stochastic, bfloat16 = (diagnostic.drift("digits", fmt, [0, 1], quick=True)
                                     for fmt in ("8bit", "8bit-stochastic", "bfloat16"))
    assert np.all(nearest < -0.3) and np.all(np.abs(stochastic) < 0.2) and np.all(bfloat16 > 0.2), \
        (nearest, stochastic, bfloat16)


@pytest.mark.parametrize("fmt,code,stochastic", [("4bit-float", "float_no_zero", False),
                                                 ("4bit-float-stochastic", "float_no_zero", True),
                                                 ("4bit-linear", "linear_no_zero", False)])
def test_round_moments_4bit_formats_round_the_second_moment_as_adamw_4bit_stores_it(fmt, code, stochastic):
    """The diagnostic's 4-bit formats: a matrix on rank-1 scales, a vector in blocks of 128, through the named
    code (checked against the NumPy reference of the tests, stochastic rounding from the documented hash);
    and they are second-moment formats only."""
    pytest.importorskip("optcore_lowbit", reason="the diagnostic rounds through optcore-lowbit's codes")
    import jax.numpy as jnp
    import optcore_lowbit

    from _reference import quantize_dequantize, rank1_quantize_dequantize, to_blocks, uniforms

    diagnostic = _load("round_moments.py", "lowbit_round_moments")
    rounder = diagnostic.rounder(fmt, optcore_lowbit.UNSIGNED)
    rng = np.random.default_rng(0)
    matrix = (rng.uniform(0, 1, (64, 96)) * 10.0 ** rng.uniform(-4, 0, (64, 1))).astype(np.float32)
    vector = (rng.uniform(0, 1, 5000) ** 4).astype(np.float32)
    step, salt = 7, 3
    got_matrix = np.asarray(rounder(jnp.asarray(matrix), jnp.int32(step), salt))
    got_vector = np.asarray(rounder(jnp.asarray(vector), jnp.int32(step), salt))
    u_matrix = uniforms(step, salt, matrix.size) if stochastic else None
    u_vector = uniforms(step, salt, to_blocks(vector, 128, 4).size) if stochastic else None
    # Equal but where a value lies within float32 rounding of a midpoint (or of u's threshold).
    assert np.mean(got_matrix == rank1_quantize_dequantize(matrix, code, 4, u_matrix)) > 0.999
    assert np.mean(got_vector == quantize_dequantize(vector, code, 4, 128, u_vector)) > 0.999
    with pytest.raises(ValueError, match="the 4bit ones for v only"):
        diagnostic.parse_row(f"m={fmt}")
