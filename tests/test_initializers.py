"""Every Table 1 initializer against its formula, computed here by hand."""

import math

import numpy as np
import pytest

from quantinit.initializers import INITIALIZER_NAMES, initializer_settings, make_initializer

# Keras truncates its Glorot/He normals at 2 std of the underlying normal and rescales that
# normal so the truncated one has the nominal std: underlying std = nominal / 0.8796...
TRUNCATION_STD = 0.87962566103423978

# kernel kinds the paper's initializer is applied to, with their fans by Eq. 1
KERNELS = {
    "conv": ((3, 3, 64, 96), 3 * 3 * 64, 3 * 3 * 96),
    "depthwise": ((3, 3, 512, 1), 3 * 3 * 512, 3 * 3 * 1),
    "pointwise": ((1, 1, 256, 192), 256, 192),
}


def hand_formula(name, fan_in, fan_out):
    """(std, bound) from Table 1 and the Glorot/He papers; bound None = unbounded normal."""
    table1 = {
        "RandNorm_Large": (1.0, None),
        "RandNorm_Med": (0.5, None),
        "RandNorm_Small": (0.1, None),
        "RandUni_Large": (1.0 / math.sqrt(3), 1.0),
        "RandUni_Med": (0.5 / math.sqrt(3), 0.5),
        "RandUni_Small": (0.25 / math.sqrt(3), 0.25),
    }
    if name in table1:
        return table1[name]
    if name.startswith("ModGlorotUni"):
        c = {"ModGlorotUni_Large": 1296, "ModGlorotUni_Med": 36}[name]
        bound = math.sqrt(c / (fan_in + fan_out))  # paper Eq. 4
        return bound / math.sqrt(3), bound
    if name == "GlorotUni":
        bound = math.sqrt(6 / (fan_in + fan_out))
        return bound / math.sqrt(3), bound
    if name == "HeUni":
        bound = math.sqrt(6 / fan_in)
        return bound / math.sqrt(3), bound
    std = math.sqrt(2 / (fan_in + fan_out)) if name == "GlorotNorm" else math.sqrt(2 / fan_in)
    return std, 2 * std / TRUNCATION_STD


@pytest.mark.parametrize("kind", sorted(KERNELS))
@pytest.mark.parametrize("name", INITIALIZER_NAMES)
def test_initializer_matches_formula(name, kind):
    shape, fan_in, fan_out = KERNELS[kind]
    values = np.asarray(make_initializer(name, seed=3)(shape)).ravel()
    std, bound = hand_formula(name, fan_in, fan_out)
    assert values.std() == pytest.approx(std, rel=0.04)
    assert abs(values.mean()) < 0.05 * std
    if bound is not None:
        assert np.abs(values).max() <= bound * (1 + 1e-6)
        # samples reach close to the bound: the distribution is not narrower than specified
        assert np.abs(values).max() > 0.95 * bound
    else:
        # an unbounded normal: about 0.27% of samples beyond 3 std
        assert 0.001 < np.mean(np.abs(values) > 3 * std) < 0.006


def test_depthwise_fans_make_glorot_small():
    """Eq. 1 on a (3,3,in,1) depthwise kernel: fan_in = 9*in, fan_out = 9."""
    values = np.asarray(make_initializer("GlorotUni", seed=0)((3, 3, 128, 1)))
    assert np.abs(values).max() <= math.sqrt(6 / (9 * 128 + 9))


def test_same_seed_same_values_other_seed_differs():
    a = np.asarray(make_initializer("HeNorm", seed=1)((3, 3, 8, 8)))
    b = np.asarray(make_initializer("HeNorm", seed=1)((3, 3, 8, 8)))
    c = np.asarray(make_initializer("HeNorm", seed=2)((3, 3, 8, 8)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_settings_override_table1():
    values = np.asarray(
        make_initializer("RandUni_Large", seed=0, settings={"limit": 0.01})((3, 3, 16, 16))
    )
    assert np.abs(values).max() <= 0.01
    assert initializer_settings("ModGlorotUni_Med") == {"C": 36}


def test_unknown_initializer_names_allowed_ones():
    with pytest.raises(ValueError, match="HeNorm"):
        initializer_settings("Kaiming")
