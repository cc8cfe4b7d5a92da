"""The ``mmseg-arb`` command, in the spirit of OpenMMLab's ``mim``::

    mmseg-arb list                           the shipped configs
    mmseg-arb config NAME [--dest DIR]       NAME's config, every base merged
    mmseg-arb train NAME|PATH [options]      mmseg's tools/train.py
    mmseg-arb test NAME|PATH CKPT [options]  mmseg's tools/test.py
    mmseg-arb summarize WORK_DIR... [--out P]  runs against mmseg's
                                             baselines
    mmseg-arb class-counts CONFIG            pixels per class (priors;
                                             class-stats, its earlier name)
    mmseg-arb prepare camvid SRC DEST        CamVid in mmseg's layout
    mmseg-arb check                          this machine's kernels against
                                             float64 (PASS / FAIL lines)

``train`` and ``test`` take mmseg's arguments, run with ``mmseg_arb``
registered, and launch ``--gpus N`` processes with torchrun.
``tools/train.py``, ``tools/test.py``, ``tools/summarize_results.py`` and
``tools/class_counts.py`` (or ``tools/class_stats.py``, its earlier name)
are this command under other names. What the commands share with the demo
and the loss study (loading a config, building its runner, the one warning
hidden) is in ``launch`` and ``quiet_warnings``.
"""
import argparse
import sys
from typing import Optional, Sequence

from ..config.shipped import ConfigNotFoundError
from . import check, class_counts, configs, prepare, summarize, test, train
from .command import UsageError
from .quiet_warnings import ignore_pkg_resources_deprecation

COMMANDS = (configs.LIST, configs.CONFIG, train.COMMAND, test.COMMAND,
            summarize.COMMAND, class_counts.COMMAND, prepare.COMMAND,
            check.COMMAND)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``mmseg-arb`` and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog='mmseg-arb',
        description='ARB-Loss for MMSegmentation: shipped configs, '
        'training, testing, results against mmseg\'s baselines.')
    commands = parser.add_subparsers(
        dest='command', metavar='COMMAND', required=True)
    for command in COMMANDS:
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            aliases=command.aliases)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run, parser=sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    """Run ``mmseg-arb`` with ``argv`` (default: the command line).

    Returns:
        int, optional: The exit status, for ``sys.exit``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    ignore_pkg_resources_deprecation()
    args = build_parser().parse_args(argv)
    try:
        # A command's own arguments follow its name, argv[0]: the top-level
        # parser has no options but --help.
        return args.run(args, argv[1:])
    except (UsageError, ConfigNotFoundError) as error:
        args.parser.error(str(error))
