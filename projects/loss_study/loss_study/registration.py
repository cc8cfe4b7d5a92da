"""A pre-registered study's chosen configurations, committed before its
final stage runs, and the commit that registered them.

Issue 29: "Before the final stage runs, commit a file naming the families'
chosen settings [...]; the report cites that commit." After the tuning
stage, the registration file (CamVid's:
``projects/loss_study/camvid/PREREGISTRATION.md``) gets a table under a
heading that contains :data:`HEADING`, one row per optimiser and tuned
family, as ``tools/loss_study.py --tuning-only`` prints it
(:func:`choices_table`)::

    | optimiser | family | chosen configuration |
    |---|---|---|
    | adamw | `arb` | `arb-batch-tau0.5` |

:func:`check_registered` is the gate that ``tools/loss_study.py
--registration FILE`` applies before any final-stage run: the tuning
stage complete, the file committed as it is, its table equal to the
selection rule's choices. It returns the first commit whose file
registered those choices, which the study JSON keeps and the report
cites; ``test_registration.py`` checks in the history that this commit
precedes every commit of a final-stage result."""
import os.path as osp
import re
import subprocess
from typing import Dict, List, Optional, Tuple

from .report import choose

HEADING = 'Chosen configurations'
# A row of the table: optimiser, `family key`, `configuration key`.
ROW = re.compile(r'^\|\s*(\w+)\s*\|\s*`([\w.-]+)`\s*\|\s*`([\w.-]+)`\s*\|')

# The choice of a family whose every tuning run failed.
FAILED = '-'
Choices = Dict[Tuple[str, str], str]


class RegistrationError(Exception):
    """Why a registered study's final stage may not start yet, and what to
    do about it."""


def tuned_families(study: Dict) -> List[Dict]:
    """The families the selection rule chooses in (CE is not tuned)."""
    return [f for f in study['families'] if len(f['losses']) > 1]


def chosen(study: Dict) -> Choices:
    """``{(optimiser, family): configuration}`` by the selection rule; a
    family whose tuning has not finished is left out, one whose every
    tuning run failed maps to ``''``."""
    out = {}
    for opt in study['protocol']['optimizers']:
        for fam in tuned_families(study):
            key = choose(study, opt, fam)
            if key is not None:
                out[opt, fam['key']] = key
    return out


def choices_table(study: Dict) -> str:
    """The table to commit in the registration file (module docstring)."""
    rows = [
        f'## {HEADING}', '', '| optimiser | family | chosen configuration |',
        '|---|---|---|'
    ]
    for (opt, fam), key in chosen(study).items():
        rows.append(f'| {opt} | `{fam}` | `{key or FAILED}` |')
    return '\n'.join(rows)


def registered_choices(text: str) -> Choices:
    """The table rows under the headings that contain :data:`HEADING`."""
    out, inside = {}, False
    for line in text.splitlines():
        if line.startswith('#'):
            inside = HEADING.lower() in line.lower()
        elif inside:
            row = ROW.match(line)
            if row:
                opt, fam, key = row.groups()
                out[opt, fam] = '' if key == FAILED else key
    return out


def _git(root: str, *args: str) -> str:
    try:
        return subprocess.run(['git', '-C', root, *args],
                              check=True,
                              capture_output=True,
                              text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        why = getattr(e, 'stderr', '') or str(e)
        raise RegistrationError(
            f'git {" ".join(args)} in {root} failed ({why.strip()}): the '
            'registration is checked against the git history of the '
            'checkout that holds it') from None


def registering_commit(root: str, path: str,
                       choices: Choices) -> Optional[Dict[str, str]]:
    """The first commit whose ``path`` (relative to the repository
    ``root``) registers ``choices``: its hash and committer date (ISO), or
    None."""
    for line in _git(root, 'log', '--reverse', '--format=%H %cI', '--',
                     path).splitlines():
        commit, date = line.split()
        text = _git(root, 'show', f'{commit}:{path}')
        if registered_choices(text) == choices:
            return dict(commit=commit, date=date)
    return None


def check_registered(study: Dict, registration: str) -> Dict[str, str]:
    """The gate before a registered study's final stage (module docstring).

    Args:
        study: The study JSON with the finished runs so far.
        registration: The registration file, in a git checkout.

    Returns:
        ``{'file', 'commit', 'date'}``: the file (relative to its
        repository's root) and the first commit that registered the
        current choices.

    Raises:
        RegistrationError: The tuning stage is not complete, the file is
            not committed as it is, or its table differs from the choices.
    """
    want = chosen(study)
    missing = [(o, f['key']) for o in study['protocol']['optimizers']
               for f in tuned_families(study) if (o, f['key']) not in want]
    if missing:
        names = ', '.join(f for _, f in missing)
        raise RegistrationError(
            f'the tuning stage is not complete ({names} not chosen yet): run '
            'the same command with --tuning-only first; the final stage of '
            'a pre-registered study starts only after its choices are '
            f'committed in {registration}')
    if not osp.isfile(registration):
        raise RegistrationError(f'{registration}: no such file')
    folder = osp.dirname(osp.abspath(registration))
    root = _git(folder, 'rev-parse', '--show-toplevel').strip()
    path = osp.relpath(osp.realpath(registration), osp.realpath(root))
    table = choices_table(study)
    if _git(root, 'status', '--porcelain', '--', path).strip():
        raise RegistrationError(
            f'{registration} differs from its last commit: commit it (with '
            'the chosen configurations) before the final stage runs')
    if registered_choices(_git(root, 'show', f'HEAD:{path}')) != want:
        raise RegistrationError(
            f'{registration} does not register the selection rule\'s '
            f'choices: add this table as a dated addendum, commit it and '
            f'run again:\n\n{table}\n')
    found = registering_commit(root, path, want)
    assert found is not None  # HEAD registers them
    return dict(file=path, **found)
