"""What every ``mmseg-arb`` sub-command is, and its usage error."""
import argparse
from typing import Callable, List, NamedTuple, Optional, Tuple


class Command(NamedTuple):
    """A sub-command: its name, one line of help, what adds its arguments
    to its parser, what runs it with the parsed arguments and its own raw
    ones (those after its name), and the earlier names it still answers
    to."""
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, List[str]], Optional[int]]
    aliases: Tuple[str, ...] = ()


class UsageError(ValueError):
    """Arguments that parse but do not go together; ``mmseg-arb`` prints
    the message with the command's usage and exits with status 2."""
