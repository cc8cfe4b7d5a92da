"""The study's job runner: results and errors of finished processes,
resume, runs added as results come in; with stand-in commands, not
trainings."""
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from projects.loss_study.loss_study.jobs import (Run, Slot, last_error,
                                                 read_result, run_all,
                                                 trained_iters)

ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

# Writes what a finished mmengine run leaves: a log folder whose
# vis_data/scalars.json ends with the validation record.
FINISHES = textwrap.dedent('''
    import json, os, sys
    folder = os.path.join(sys.argv[1], '20260101_000000', 'vis_data')
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'scalars.json'), 'w') as f:
        f.write(json.dumps({'loss': 1.0, 'iter': 4, 'step': 4}) + '\\n')
        f.write(json.dumps({'mIoU': float(sys.argv[2]), 'aAcc': 90.0,
                            'IoU.wall': 80.0, 'step': 4}) + '\\n')
''')
CRASHES = textwrap.dedent('''
    def lookup(weights, label):
        return weights[label]
    lookup([1.0] * 3, 255)
''')
SLOT = Slot(env={}, launcher=[sys.executable])


def fake_run(tmp_path, key, script, *args):
    run_dir = str(tmp_path / key)
    return Run(
        key,
        key.split('/')[0],
        0,
        run_dir, ['-c', script, run_dir, *args],
        iters=4)


def test_results_errors_and_resume(tmp_path):
    runs = [
        fake_run(tmp_path, 'good/seed0', FINISHES, '42.5'),
        fake_run(tmp_path, 'bad/seed0', CRASHES)
    ]
    results, trained = run_all(
        runs, [SLOT, SLOT], progress=False, poll_seconds=0.05)
    assert sorted(trained) == ['bad/seed0', 'good/seed0']
    good, bad = results['good/seed0'], results['bad/seed0']
    assert good['status'] == 'ok'
    assert good['summary'] == {'mIoU': 42.5, 'aAcc': 90.0}
    assert good['per_class_iou'] == {'wall': 80.0}
    assert bad['status'] == 'failed' and bad['returncode'] == 1
    assert bad['error'] == 'IndexError: list index out of range'
    assert bad['where'] == '<string>:3'
    assert read_result(runs[1].run_dir) == bad

    # A second call starts nothing, not even the failed run.
    again, trained = run_all(runs, [SLOT], progress=False, poll_seconds=0.05)
    assert trained == [] and again == results


def test_a_run_resumed_from_a_checkpoint_says_where(tmp_path):
    """Its batches after the resume are not an uninterrupted run's: the
    result records the iteration, from mmengine's log line."""
    resumes = ("print('12/04 20:48:14 - mmengine - INFO - resumed epoch: "
               "0, iter: 750')\n" + FINISHES)
    runs = [
        fake_run(tmp_path, 'resumed/seed0', resumes, '40.0'),
        fake_run(tmp_path, 'whole/seed0', FINISHES, '41.0')
    ]
    results, _ = run_all(runs, [SLOT], progress=False, poll_seconds=0.05)
    assert results['resumed/seed0']['resumed_at'] == [750]
    assert 'resumed_at' not in results['whole/seed0']


def test_dependent_runs_start_once_their_inputs_are_in(tmp_path):
    first = fake_run(tmp_path, 'mode/seed0', FINISHES, '30')
    later = fake_run(tmp_path, 'tau/seed0', FINISHES, '31')
    calls = []

    def more_runs(results):
        calls.append(sorted(results))
        return [later] if 'mode/seed0' in results else []

    results, trained = run_all([first], [SLOT],
                               more_runs,
                               progress=False,
                               poll_seconds=0.05)
    assert trained == ['mode/seed0', 'tau/seed0']
    assert calls[0] == []  # asked once before anything ran
    assert results['tau/seed0']['summary']['mIoU'] == 31.0


def test_last_error_takes_the_final_traceback():
    log = textwrap.dedent('''\
        some training output
        Traceback (most recent call last):
          File "/x/site-packages/mmseg/a.py", line 3, in f
            g()
        KeyError: 'first'

        During handling of the above exception, another exception occurred:

        Traceback (most recent call last):
          File "/x/site-packages/mmengine/runner.py", line 10, in train
            step()
          File "/x/site-packages/mmseg/models/losses/ce.py", line 66, in ce
            w = torch.stack([cw[c] for c in label])
                             ~~^^^
        IndexError: index 255 is out of bounds for dimension 0 with size 24
        ''')
    assert last_error(log) == (
        'IndexError: index 255 is out of bounds for dimension 0 with size 24',
        'mmseg/models/losses/ce.py:66')
    assert last_error('Killed\n') == ('Killed', None)


def test_trained_iters_reads_the_newest_log_folder(tmp_path):
    assert trained_iters(str(tmp_path)) == 0
    for stamp, iters in (('20260101_000000', 40), ('20260102_000000', 7)):
        folder = tmp_path / stamp / 'vis_data'
        folder.mkdir(parents=True)
        (folder / 'scalars.json').write_text(
            json.dumps({'iter': iters}) + '\n{"iter": ')  # being written
    assert trained_iters(str(tmp_path)) == 7


SLEEPS = 'import time; time.sleep(600)'
STUDY = textwrap.dedent('''
    import sys
    from projects.loss_study.loss_study.jobs import Run, Slot, run_all
    run = Run('long/seed0', 'long', 0, sys.argv[1],
              ['-c', {sleeps!r}], iters=1)
    run_all([run], [Slot({{}}, [sys.executable])], progress=False,
            poll_seconds=0.05)
''')


@pytest.mark.slow
@pytest.mark.parametrize('signum',
                         [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_a_terminated_study_stops_its_runs(tmp_path, signum):
    """However the study ends, its runs end with it: a later call must not
    find a run still training into the folder it would train again."""
    study = subprocess.Popen(
        [sys.executable, '-c',
         STUDY.format(sleeps=SLEEPS),
         str(tmp_path)],
        cwd=ROOT)
    try:
        # The run is up once it has a log and a process.
        deadline = time.time() + 60
        while not _children(study.pid, SLEEPS) and time.time() < deadline:
            time.sleep(0.1)
        run, = _children(study.pid, SLEEPS)
        study.send_signal(signum)
        handled = signum != signal.SIGKILL
        assert study.wait(timeout=60) == (128 + signum if handled else -signum)
        deadline = time.time() + 30
        while _alive(run) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(run)  # stopped (and reaped by the study or init)
    finally:
        if study.poll() is None:
            study.kill()
        for pid in _processes_running(SLEEPS):
            os.kill(pid, signal.SIGKILL)
    assert not (tmp_path / 'result.json').exists()


def _alive(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def _children(parent: int, script: str):
    found = []
    for pid in _processes_running(script):
        with open(f'/proc/{pid}/stat') as f:
            if int(f.read().rsplit(')', 1)[1].split()[1]) == parent:
                found.append(pid)
    return found


def _processes_running(script: str):
    """Processes running ``python -c script`` (not those that merely
    mention it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                argv = f.read().decode(errors='replace').split('\0')
        except OSError:
            continue
        if argv[1:3] == ['-c', script]:
            found.append(int(pid))
    return found


NAPS = 'import time; time.sleep(20)'
FORK_SIGNALLED = textwrap.dedent('''
    import os, signal, sys
    from projects.loss_study.loss_study.jobs import Run, Slot, run_all
    # SIGTERM while the study starts a run: Python runs the handler inside
    # an at-fork hook, which swallows what it raises (as logging's does).
    os.register_at_fork(
        after_in_parent=lambda: os.kill(os.getpid(), signal.SIGTERM))
    run = Run('nap/seed0', 'nap', 0, sys.argv[1], ['-c', {naps!r}],
              iters=1)
    run_all([run], [Slot({{}}, [sys.executable])], progress=False,
            poll_seconds=0.05)
''')


def test_a_signal_while_a_run_starts_still_stops_the_study(tmp_path):
    """A SIGTERM that lands while the study forks a run (a busy machine
    made it happen) stops the study and its run all the same, instead of
    being lost in the fork's hooks."""
    started = time.time()
    study = subprocess.run([
        sys.executable, '-c',
        FORK_SIGNALLED.format(naps=NAPS),
        str(tmp_path)
    ],
                           cwd=ROOT,
                           capture_output=True,
                           text=True,
                           timeout=120)
    assert study.returncode == 128 + signal.SIGTERM, study.stderr[-2000:]
    assert time.time() - started < 15  # not after the run's 20 s
    assert not (tmp_path / 'result.json').exists()
    deadline = time.time() + 30
    while _processes_running(NAPS) and time.time() < deadline:
        time.sleep(0.1)
    assert not _processes_running(NAPS)
