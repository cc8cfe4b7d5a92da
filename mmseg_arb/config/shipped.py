"""The configs mmseg-arb ships, found by name wherever the package is.

An installed package (a wheel, ``pip install .``) carries them as
``mmseg_arb/.mim/configs``, OpenMMLab's layout, copied there from the
repository's ``configs/`` when the package is built (``setup.py``). A source
checkout or an editable install reads ``configs/`` beside the package.

A config's name is its file name without ``.py``, e.g.
``deeplabv3plus_r50-d8_arb_4xb4-80k_ade20k-512x512``; ``folder/name``
(``_base_/arb``) and a trailing ``.py`` are accepted too.
"""
import difflib
import glob
import os.path as osp
from typing import Dict

PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))


class ConfigNotFoundError(FileNotFoundError):
    """Neither a config file nor the name of a shipped config."""


def configs_root() -> str:
    """The folder of the shipped configs.

    Raises:
        FileNotFoundError: If the package has no configs: built without
            them, or a source tree without ``configs/``.
    """
    installed = osp.join(PACKAGE_DIR, '.mim', 'configs')
    if osp.isdir(installed):
        return installed
    # Checked by a file of ours, not by the folder's name: site-packages may
    # hold some other project's top-level ``configs``.
    source = osp.join(osp.dirname(PACKAGE_DIR), 'configs')
    if osp.isfile(osp.join(source, '_base_', 'arb.py')):
        return source
    raise FileNotFoundError(
        f'mmseg_arb at {PACKAGE_DIR} has no configs: neither '
        f'{installed} (an installed package) nor {source} (a source '
        f'checkout); reinstall it from the repository or a wheel built '
        f'from it')


def shipped_configs() -> Dict[str, str]:
    """``{'folder/name': path}`` of every shipped config, sorted."""
    root = configs_root()
    paths = sorted(glob.glob(osp.join(root, '*', '*.py')))
    return {
        osp.splitext(osp.relpath(p, root))[0].replace(osp.sep, '/'): p
        for p in paths
    }


def find_config(name: str) -> str:
    """Path of the shipped config ``name`` (see the module docstring).

    Raises:
        ConfigNotFoundError: If no shipped config has that name; the message
            lists the closest names.
    """
    configs = shipped_configs()
    key = name[:-len('.py')] if name.endswith('.py') else name
    if key in configs:
        return configs[key]
    by_stem = {k.split('/')[-1]: p for k, p in configs.items()}
    if key in by_stem:
        return by_stem[key]
    close = difflib.get_close_matches(
        key.split('/')[-1], list(by_stem), n=5, cutoff=0.6)
    hint = ('; did you mean: ' + ', '.join(close)) if close else ''
    raise ConfigNotFoundError(
        f'no shipped config named {name!r}{hint} (`mmseg-arb list` shows '
        f'them all)')


def resolve_config(name_or_path: str) -> str:
    """``name_or_path`` if it is a file, else the shipped config of that
    name.

    Raises:
        ConfigNotFoundError: If it is neither.
    """
    if osp.isfile(name_or_path):
        return name_or_path
    try:
        return find_config(name_or_path)
    except ConfigNotFoundError as error:
        raise ConfigNotFoundError(
            f'{name_or_path!r} is not a file, and {error}') from None
