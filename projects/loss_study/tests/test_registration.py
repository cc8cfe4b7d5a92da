"""A pre-registered study's choices, committed before its final stage: the
gate of ``tools/loss_study.py --registration`` on a made-up study in a
scratch repository, and, in this repository's history, that the CamVid
study's registering commit precedes every commit of a final-stage
result."""
import json
import os.path as osp
import subprocess

import pytest

from projects.loss_study.loss_study.registration import (HEADING,
                                                         RegistrationError,
                                                         check_registered,
                                                         choices_table, chosen,
                                                         registered_choices)
from projects.loss_study.loss_study.report import run_key
from .test_report import FAILED, FAMILY, ok, study

PROJECT = osp.dirname(osp.dirname(osp.abspath(__file__)))
ROOT = osp.dirname(osp.dirname(PROJECT))
CAMVID_JSON = 'projects/loss_study/results/camvid/loss_study.json'
CAMVID_REGISTRATION = 'projects/loss_study/camvid/PREREGISTRATION.md'


def git(root, *args):
    return subprocess.run(['git', '-C', str(root), *args],
                          check=True,
                          capture_output=True,
                          text=True).stdout


def tuned(**means):
    """A study of one tuned family (``FAMILY``: a, b, c) at 2 tuning
    seeds, each configuration's validation mIoU given (None: failed)."""
    runs = {}
    for loss, miou in means.items():
        for seed in (0, 1):
            runs[run_key('tune', 'adamw', loss, 0, seed)] = \
                FAILED if miou is None else ok(miou)
    return dict(study(runs), families=[FAMILY])


def test_the_table_round_trips():
    s = tuned(a=10, b=30, c=20)
    assert chosen(s) == {('adamw', 'arb'): 'b'}
    table = choices_table(s)
    assert table.splitlines()[0] == f'## {HEADING}'
    assert '| adamw | `arb` | `b` |' in table
    # Rows count only under the heading; a failed family round-trips.
    text = (f'| adamw | `arb` | `a` |\n\n{table}\n\n## Later\n'
            '| adamw | `x` | `y` |')
    assert registered_choices(text) == {('adamw', 'arb'): 'b'}
    failed = tuned(a=None, b=None, c=None)
    assert chosen(failed) == {('adamw', 'arb'): ''}
    assert registered_choices(choices_table(failed)) == chosen(failed)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / 'repo'
    root.mkdir()
    git(root, 'init', '-q')
    git(root, 'config', 'user.email', 'lead@example.com')
    git(root, 'config', 'user.name', 'lead')
    path = root / 'REGISTRATION.md'
    path.write_text('# Registration\n\nThe protocol.\n')
    git(root, 'add', '.')
    git(root, 'commit', '-qm', 'protocol, before any run')
    return path


def commit(path, text, message):
    path.write_text(text)
    git(path.parent, 'commit', '-qam', message)
    return git(path.parent, 'rev-parse', 'HEAD').strip()


def test_the_gate_refuses_until_the_choices_are_committed(repo):
    incomplete = tuned(a=10, b=30)  # c not trained yet
    with pytest.raises(RegistrationError, match='--tuning-only first'):
        check_registered(incomplete, str(repo))
    s = tuned(a=10, b=30, c=20)
    with pytest.raises(RegistrationError) as e:
        check_registered(s, str(repo))
    assert '| adamw | `arb` | `b` |' in str(e.value)  # the table to add
    protocol = repo.read_text()
    # Written but not committed: refused.
    repo.write_text(protocol + '\n' + choices_table(s) + '\n')
    with pytest.raises(RegistrationError, match='differs from its last'):
        check_registered(s, str(repo))
    # A wrong choice committed: refused.
    wrong = commit(
        repo, protocol + '\n' + choices_table(s).replace('`b`', '`c`') + '\n',
        'wrong choices')
    with pytest.raises(RegistrationError, match='does not register'):
        check_registered(s, str(repo))
    # The right one, then a later addendum: the first registering commit.
    right = commit(repo, protocol + '\n' + choices_table(s) + '\n', 'choices')
    commit(repo, repo.read_text() + '\n## Addendum\n\nLater.\n', 'later')
    found = check_registered(s, str(repo))
    assert found['commit'] == right != wrong
    assert found['file'] == 'REGISTRATION.md' and found['date']


def test_outside_a_git_checkout_the_gate_says_so(tmp_path):
    path = tmp_path / 'REGISTRATION.md'
    path.write_text(choices_table(tuned(a=1, b=2, c=3)))
    with pytest.raises(RegistrationError, match='git history'):
        check_registered(tuned(a=1, b=2, c=3), str(path))


def _history(path):
    """This repository's commits that changed ``path``, oldest first."""
    return git(ROOT, 'log', '--reverse', '--format=%H', '--', path).split()


def test_the_camvid_registration_precedes_every_final_result():
    """Issue 29: the pre-registration commit precedes every final-stage
    result, and the committed JSON cites the commit that registered its
    choices."""
    if not osp.isdir(osp.join(ROOT, '.git')) and not osp.isfile(
            osp.join(ROOT, '.git')):
        pytest.skip('not a git checkout: no history to check')
    if git(ROOT, 'rev-parse', '--is-shallow-repository').strip() == 'true':
        pytest.skip('a shallow clone: the history is not all here')
    with open(osp.join(ROOT, CAMVID_JSON)) as f:
        current = json.load(f)
    registration = current.get('registration')
    if registration is not None:
        assert registration['file'] == CAMVID_REGISTRATION
        text = git(ROOT, 'show',
                   f"{registration['commit']}:{CAMVID_REGISTRATION}")
        assert registered_choices(text) == chosen(current)
    first_protocol = _history(CAMVID_REGISTRATION)[0]
    for commit in _history(CAMVID_JSON):
        runs = json.loads(git(ROOT, 'show', f'{commit}:{CAMVID_JSON}'))['runs']
        assert subprocess.run([
            'git', '-C', ROOT, 'merge-base', '--is-ancestor', first_protocol,
            commit
        ]).returncode == 0, commit
        if not any(k.startswith('final/') for k in runs):
            continue
        assert registration is not None, (
            f'{commit[:7]} holds final-stage results of the CamVid study, '
            'and its JSON names no registering commit')
        assert subprocess.run([
            'git', '-C', ROOT, 'merge-base', '--is-ancestor',
            registration['commit'], commit
        ]).returncode == 0, (f'{commit[:7]} holds final-stage results and '
                             f"does not descend from {registration['commit']}")
