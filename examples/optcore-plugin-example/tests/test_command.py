"""``optcore qhadam-fit``: the command the plugin adds through ``optcore_add_commands``."""

import json
import subprocess
import sys

import numpy as np


def numpy_qhadam_fit(target, steps, lr, b1=0.999, b2=0.999, nu1=0.7, nu2=1.0, eps=1e-8):
    """QHAdam's equations (Ma & Yarats 2019) on f(x) = 0.5 |x - t|^2 from x = 0, in float64."""
    target = np.asarray(target, np.float64)
    x = m = v = np.zeros_like(target)
    for t in range(1, steps + 1):
        g = x - target
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        x = x - lr * ((1 - nu1) * g + nu1 * m_hat) / (np.sqrt((1 - nu2) * g * g + nu2 * v_hat) + eps)
    return x


def run_optcore(*argv):
    result = subprocess.run([sys.executable, "-m", "optcore", *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_command_runs_qhadam_and_matches_the_equations():
    out = json.loads(run_optcore("qhadam-fit", "--target", "1,-2,0.5", "--steps", "40", "--learning-rate", "0.05",
                                 "--json").strip().splitlines()[-1])
    want = numpy_qhadam_fit([1.0, -2.0, 0.5], 40, 0.05)
    np.testing.assert_allclose(out["params"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["loss"], 0.5 * np.sum((want - [1.0, -2.0, 0.5]) ** 2), rtol=1e-4)


def test_the_command_is_listed_in_the_help():
    assert "qhadam-fit" in run_optcore("--help")
