"""ftkit.evaluate.power: the sample sizes agree with their own power function, with simulation of
the tests the notebooks run (exact McNemar, Bonett-Price interval), and with a published value."""

import math

import numpy as np
import pytest

from ftkit.evaluate import power as pw
from ftkit.evaluate.stats import mcnemar_p, paired_difference


def test_sample_size_is_the_smallest_n_with_the_power():
    for delta, psi in [(0.10, 0.20), (0.15, 0.30), (0.05, 0.10), (0.20, 0.25)]:
        n = pw.paired_sample_size(delta, psi)
        assert pw.paired_power(n, delta, psi) >= 0.8
        assert pw.paired_power(n - 1, delta, psi) < 0.8


def test_connor_worked_value():
    # Connor (1987) formula by hand: (1.95996*sqrt(.2) + 0.84162*sqrt(.19))**2 / .01 = 154.6
    assert pw.paired_sample_size(0.10, 0.20) == 155


def test_detectable_inverts_sample_size():
    for n, psi in [(101, 0.2), (24, 0.3), (500, 0.1)]:
        d = pw.paired_detectable(n, psi)
        if math.isfinite(d):
            assert pw.paired_power(n, d, psi) == pytest.approx(0.8, abs=1e-6)
            assert pw.paired_sample_size(d * 1.0001, psi) <= n + 1
    # more examples detect smaller effects
    assert pw.paired_detectable(400, 0.2) < pw.paired_detectable(100, 0.2)
    # 12 examples with few flips cannot detect anything the flips allow
    assert pw.paired_detectable(12, 0.1) == math.inf


def _simulate(n, gain, loss, rng, sims):
    draws = rng.multinomial(n, [gain, loss, 1 - gain - loss], size=sims)
    return draws[:, 0], draws[:, 1]


def test_mcnemar_power_matches_simulation_of_the_exact_test():
    rng = np.random.default_rng(0)
    n = pw.paired_sample_size(0.10, 0.20)
    g, lo = _simulate(n, 0.15, 0.05, rng, 2000)
    hits = np.mean([mcnemar_p(int(a), int(b)) < 0.05 for a, b in zip(g, lo)])
    assert 0.72 <= hits <= 0.88  # the exact test is a little conservative


def test_noninferiority_size_matches_simulation_of_the_interval():
    rng = np.random.default_rng(1)
    n = pw.noninferiority_sample_size(0.05, 0.20)
    assert n > 500  # a 5-point margin needs hundreds of tickets, not 12 or 101
    g, lo = _simulate(n, 0.10, 0.10, rng, 1000)
    ok = np.mean([paired_difference(0, int(a), int(b), n - int(a) - int(b))["low"] > -0.05
                  for a, b in zip(g, lo)])
    assert 0.72 <= ok <= 0.88


def test_proportion_precision_round_trip():
    n = pw.proportion_sample_size(0.9, 0.05)
    assert pw.proportion_half_width(0.9, n) <= 0.05 < pw.proportion_half_width(0.9, n - 1)


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="discordant"):
        pw.paired_sample_size(0.3, 0.2)
    with pytest.raises(ValueError, match="power"):
        pw.paired_sample_size(0.1, 0.2, power=1.5)
    with pytest.raises(ValueError, match="n must be positive"):
        pw.paired_power(0, 0.1, 0.2)


def test_sizing_text_states_the_figures_it_computed():
    text = pw.sizing_text(101, 20, delta=0.10, margin=0.05)
    share = 20 / 101
    assert f"{pw.paired_sample_size(0.10, share):,} examples" in text
    assert f"{pw.noninferiority_sample_size(0.05, share):,}" in text
    assert f"{pw.paired_detectable(101, share) * 100:.0f} points" in text
    assert "too few examples" in pw.sizing_text(12, 0)
    with pytest.raises(ValueError, match="flipped"):
        pw.sizing_text(10, 11)
