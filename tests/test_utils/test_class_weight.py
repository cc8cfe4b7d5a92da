"""Class weights ``n^-p`` from pixel counts (``power_class_weight``), for
mmseg's ``CrossEntropyLoss(class_weight=...)``; the file that
``mmseg-arb class-counts --weight-power p`` writes is tested with the
command (tests/test_cli/test_class_counts.py)."""

import numpy as np
import pytest

from mmseg_arb.utils.class_counts import (class_weight_file,
                                          parse_class_weight_file,
                                          power_class_weight)

COUNTS = [5000.0, 2000.0, 700.0, 0.0] + [100.0] * 20


def test_a_counted_pixel_weighs_one_on_average():
    counts = np.array(COUNTS)
    present = counts > 0
    for power in (0.25, 0.5, 1.0):
        weight = np.array(power_class_weight(COUNTS, power))
        assert weight[3] == 0  # no pixels, no weight
        assert (counts * weight).sum() / counts.sum() == pytest.approx(
            1, rel=1e-5)
        assert weight[0] / weight[4] == pytest.approx(
            (100 / 5000)**power, rel=1e-4)
    # Inverse frequency: every present class carries the same total weight.
    share = counts / counts.sum()
    np.testing.assert_allclose(
        (share * power_class_weight(COUNTS, 1.0))[present],
        1 / present.sum(),
        rtol=1e-5)
    assert power_class_weight(COUNTS, 0.0) == present.astype(float).tolist()


@pytest.mark.parametrize('power', [-0.5, float('nan'), float('inf')])
def test_a_bad_power_is_refused(power):
    with pytest.raises(ValueError, match='weight_power must be a finite'):
        power_class_weight(COUNTS, power)


def test_counts_without_a_pixel_are_refused():
    with pytest.raises(ValueError, match='at least one class with pixels'):
        power_class_weight([0.0, 0.0], 0.5)


def test_the_weight_file_name_reads_back():
    """The demo and the missing-file error read split and power back from
    the name that ``class-counts --weight-power`` writes."""
    for split, power in (('train', 0.5), ('val', 0.25), ('train', 1.0)):
        name = class_weight_file(split, power)
        assert parse_class_weight_file(f'data/x/{name}') == (split,
                                                             f'{power:g}')
    for other in ('w.npy', 'my_p0.5.json', 'class_weight_train.json'):
        assert parse_class_weight_file(other) is None
