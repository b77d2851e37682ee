import numpy as np
import pytest

from DiscAnalysisLib import levels
from DiscAnalysisLib.errors import InputError


def test_spineps_convention_values():
    assert [levels.label_of(v) for v in levels.VERTEBRAE] == [20, 21, 22, 23, 24, 26]
    assert [levels.label_of(d) for d in levels.DISCS] == [120, 121, 122, 123, 124]
    for disc in levels.DISCS:
        upper, _ = levels.disc_neighbours(disc)
        assert levels.label_of(disc) == 100 + levels.label_of(upper)


@pytest.mark.parametrize(
    "spelling, canonical",
    [("l4l5", "L4-L5"), ("L4/L5", "L4-L5"), ("L4-5", "L4-L5"), ("L5S1", "L5-S1"), ("L5-1", "L5-S1"), (" s1 ", "S1")],
)
def test_name_spellings(spelling, canonical):
    assert levels.normalise_name(spelling) == canonical


def test_unknown_names_and_labels_raise():
    with pytest.raises(InputError, match="Unknown level"):
        levels.label_of("T12-L1")
    with pytest.raises(InputError, match="not in the DiscAnalysis"):
        levels.name_of(7)


def test_convert_from_l5s1_numbering():
    src = np.array([[0, 1, 2], [3, 4, 5]])
    out = levels.convert_labels(src, "from_l5s1")
    assert out.tolist() == [[0, 124, 123], [122, 121, 120]]
    out2 = levels.convert_labels(src, "from_l1l2")
    assert out2.tolist() == [[0, 120, 121], [122, 123, 124]]


def test_convert_refuses_unknown_values():
    with pytest.raises(InputError, match=r"\[9\]"):
        levels.convert_labels(np.array([0, 1, 9]), "from_l5s1")
    with pytest.raises(InputError, match="Unknown label convention"):
        levels.convert_labels(np.array([0, 1]), "nonsense")


def test_every_level_has_a_distinct_colour():
    names = levels.VERTEBRAE + levels.DISCS
    colours = [levels.LEVEL_COLORS[n] for n in names]
    assert len(set(colours)) == len(names)
