"""The one warning our programs hide: setuptools' deprecation of
``pkg_resources``.

mmengine 0.10 imports ``pkg_resources`` and reloads it each time a config
names an ``mmseg::`` base (``mmengine.utils.package_utils``), and setuptools
from 67.3 to 80 warns at every such import: four copies of a notice meant for
mmengine's developers before a run prints anything of its own, and more
with each config loaded. A user cannot act on it. Every other warning is
left as it is.
"""
import sys
import warnings

# The start of setuptools' message (a regular expression, matched at the
# start of the warning's text).
PKG_RESOURCES_DEPRECATION = 'pkg_resources is deprecated as an API'


def ignore_pkg_resources_deprecation() -> None:
    """Hide setuptools' ``pkg_resources`` deprecation warning in this
    process and those it forks.

    Left alone if the user set warning filters (``python -W``,
    ``PYTHONWARNINGS``): theirs then decide, as Python's documentation
    recommends for programs that change the defaults.
    """
    if sys.warnoptions:
        return
    warnings.filterwarnings('ignore', message=PKG_RESOURCES_DEPRECATION)
