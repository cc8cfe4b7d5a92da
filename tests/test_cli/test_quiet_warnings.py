"""Only setuptools' pkg_resources deprecation is hidden, and only where the
user set no warning filters of their own."""
import importlib
import subprocess
import sys
import warnings

import pytest

from mmseg_arb.cli.quiet_warnings import PKG_RESOURCES_DEPRECATION

SNIPPET = """
import warnings
from mmseg_arb.cli.quiet_warnings import ignore_pkg_resources_deprecation
ignore_pkg_resources_deprecation()
warnings.warn('pkg_resources is deprecated as an API. See ...', UserWarning)
warnings.warn('reduce_zero_label will be deprecated', UserWarning)
"""


def _stderr(*python_options):
    result = subprocess.run([sys.executable, *python_options, '-c', SNIPPET],
                            capture_output=True,
                            text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.mark.slow
def test_hides_only_the_pkg_resources_deprecation():
    err = _stderr()
    assert 'pkg_resources' not in err
    assert 'reduce_zero_label will be deprecated' in err


@pytest.mark.slow
def test_user_warning_filters_win():
    err = _stderr('-W', 'default')
    assert 'pkg_resources is deprecated' in err


def _pkg_resources_warnings(*ignored_messages):
    """What (re)importing pkg_resources warns about, as mmengine does it."""
    import pkg_resources
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for message in ignored_messages:
            warnings.filterwarnings('ignore', message=message)
        importlib.reload(pkg_resources)
    return [
        str(w.message) for w in caught if 'pkg_resources' in str(w.message)
    ]


def test_the_filter_matches_the_installed_setuptools_message():
    if not _pkg_resources_warnings():
        pytest.skip('this setuptools does not deprecate pkg_resources')
    assert _pkg_resources_warnings(PKG_RESOURCES_DEPRECATION) == []
