"""Running the study's trainings: one process per run, as many at once as
there are slots, finished runs skipped, progress shown.

Each run is ``tools/train.py CONFIG --work-dir RUN_DIR --resume``, the
command a user types, in a process of its own: mmengine keeps state per
process (logger and visualizer singletons, the default scope), so runs in
one process would share it. A :class:`Slot` is where a run executes: a
number of CPU threads, or the GPUs it may see (with ``torchrun`` when it
has several), so the same code runs on a laptop and on a GPU node.

A finished run leaves ``result.json`` in its folder: the metrics of its
final validation (``summary``, ``per_class_iou``), of its test split when
the config tests after training (``test``), its validation mIoU at every
validation (``curve``), or the error it stopped with. A run that has one is not
started again; an interrupted one restarts from its last checkpoint, if
it saved one, and its result says where (``resumed_at``: its batches after
that point are not those of an uninterrupted run).
"""
import glob
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mmseg_arb.results.runs import SUMMARY_KEYS

TEST_METRICS = 'test_metrics.json'  # written by hooks.TestAfterTrainHook

RESULT_FILE = 'result.json'
LOG_FILE = 'train.log'
_FRAME = re.compile(r'\s*File "(?P<path>.+)", line (?P<line>\d+), in ')
_RESUMED = re.compile(r'resumed epoch: \d+, iter: (\d+)')


def resumed_at(log: str) -> List[int]:
    """The iterations a run was resumed at, from mmengine's log."""
    return [int(m) for m in _RESUMED.findall(log)]


@dataclass
class Slot:
    """Where one run executes.

    Args:
        env: Environment variables of the run's process (threads, visible
            GPUs).
        launcher: The command that starts ``tools/train.py``: the Python
            interpreter, or ``torchrun`` with its options.
        distributed: Whether ``tools/train.py`` gets ``--launcher
            pytorch``.
    """
    env: Dict[str, str]
    launcher: List[str]
    distributed: bool = False


@dataclass
class Run:
    """One training of the study.

    Args:
        key: Unique name, ``<loss key>/seed<seed>``.
        loss: Key of the study's loss.
        seed: Random seed of the run (data order and initialisation).
        run_dir: Its work dir.
        args: ``tools/train.py`` and its arguments.
        iters: Training iterations, for the progress bar.
    """
    key: str
    loss: str
    seed: int
    run_dir: str
    args: List[str]
    iters: int
    started: float = field(default=0.0, repr=False)


def read_json(path: str) -> Optional[Dict]:
    """The JSON file at ``path``, or None where there is none."""
    if not osp.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_result(run_dir: str) -> Optional[Dict]:
    """The result a finished run left, or None."""
    return read_json(osp.join(run_dir, RESULT_FILE))


def last_error(log: str) -> Tuple[str, Optional[str]]:
    """The exception a Python process died of, from its output.

    Returns:
        tuple: The exception line (``'IndexError: ...'``) and where it was
        raised (``'mmseg/models/losses/cross_entropy_loss.py:66'``), or the
        last line of output and None when there is no traceback.
    """
    lines = log.splitlines()
    starts = [
        i for i, line in enumerate(lines)
        if line.startswith('Traceback (most recent call last)')
    ]
    if not starts:
        tail = [line.strip() for line in lines if line.strip()]
        return (tail[-1] if tail else 'no output'), None
    where = None
    for line in lines[starts[-1] + 1:]:
        frame = _FRAME.match(line)
        if frame:
            where = f"{_short_path(frame['path'])}:{frame['line']}"
        elif line and not line[0].isspace():
            return line.strip(), where
    return 'traceback without an exception line', where


def _short_path(path: str) -> str:
    for marker in ('site-packages/', 'dist-packages/'):
        if marker in path:
            return path.split(marker, 1)[1]
    return osp.relpath(path) if osp.isabs(path) else path


def trained_iters(run_dir: str) -> int:
    """The last training iteration the run has logged so far (mmengine's
    ``vis_data/scalars.json`` of its newest log folder)."""
    files = sorted(
        glob.glob(osp.join(run_dir, '2*_*', 'vis_data', 'scalars.json')))
    if not files:
        return 0
    last = 0
    with open(files[-1]) as f:
        for line in f:
            try:
                last = max(last, int(json.loads(line).get('iter', 0)))
            except (ValueError, AttributeError):
                pass  # a line being written
    return last


def validations(run_dir: str) -> List[Dict]:
    """The validation records of a run (mmengine's ``vis_data/scalars.json``
    of its log folders, oldest first; a resumed run's later folders
    replace earlier records of the same step)."""
    by_step: Dict[int, Dict] = {}
    for path in sorted(
            glob.glob(osp.join(run_dir, '2*_*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line being written
                if 'mIoU' in record:
                    by_step[int(record.get('step', 0))] = record
    return [by_step[s] for s in sorted(by_step)]


def _metrics(record: Dict) -> Dict:
    return dict(
        summary={k: record[k]
                 for k in SUMMARY_KEYS if k in record},
        per_class_iou={
            k[len('IoU.'):]: v
            for k, v in record.items() if k.startswith('IoU.')
        })


def _collect(run: Run, returncode: int) -> Dict:
    log_path = osp.join(run.run_dir, LOG_FILE)
    result = dict(
        loss=run.loss,
        seed=run.seed,
        seconds=round(time.time() - run.started, 1),
        log=log_path)
    if returncode == 0:
        records = validations(run.run_dir)
        if records:
            result.update(
                status='ok',
                **_metrics(records[-1]),
                curve=[[int(r.get('step', 0)), r['mIoU']] for r in records])
            test = osp.join(run.run_dir, TEST_METRICS)
            if osp.exists(test):
                with open(test) as f:
                    result['test'] = _metrics(json.load(f))
            resumed = []
            if osp.exists(log_path):
                with open(log_path, errors='replace') as f:
                    resumed = resumed_at(f.read())
            if resumed:
                result['resumed_at'] = resumed
            return result
        error, where = f'{run.run_dir}: no validation with mIoU', None
    else:
        with open(log_path, errors='replace') as f:
            error, where = last_error(f.read())
    result.update(
        status='failed', returncode=returncode, error=error, where=where)
    return result


def write_atomic(path: str, text: str) -> None:
    """Readers (and a copy taken mid-study) see the old file or the new
    one, never half of one."""
    with open(path + '.tmp', 'w') as f:
        f.write(text)
    os.replace(path + '.tmp', path)


def write_result(run_dir: str, result: Dict) -> None:
    os.makedirs(run_dir, exist_ok=True)
    write_atomic(osp.join(run_dir, RESULT_FILE), json.dumps(result, indent=1))


def run_all(runs: Sequence[Run],
            slots: Sequence[Slot],
            more_runs: Optional[Callable[[Dict[str, Dict]], List[Run]]] = None,
            progress: bool = True,
            poll_seconds: float = 1.0) -> Tuple[Dict[str, Dict], List[str]]:
    """Train every run that has no result yet, ``len(slots)`` at a time.

    Args:
        runs: The runs, in the order to start them.
        slots: Where runs execute; one run per slot at a time.
        more_runs: Called with all results so far (key to result) after
            each run finishes and once at the start; returns runs that
            depend on them (already known ones are ignored). They start
            before the remaining runs.
        progress: Show a progress bar over all iterations (a line per
            finished run is printed either way).
        poll_seconds: How often the runs are checked.

    Returns:
        tuple: Run key to result for every run (those done before too), and
        the keys of the runs trained in this call.
    """
    from tqdm import tqdm

    results: Dict[str, Dict] = {}
    trained: List[str] = []
    queue: List[Run] = []
    known = set()

    def add(new_runs: Sequence[Run], front: bool = False) -> int:
        fresh = []
        for run in new_runs:
            if run.key in known:
                continue
            known.add(run.key)
            done = read_result(run.run_dir)
            if done is not None:
                results[run.key] = done
            else:
                fresh.append(run)
        queue[:0 if front else len(queue)] = fresh
        return sum(r.iters for r in fresh)

    add(runs)
    if more_runs is not None:
        add(more_runs(results), front=True)
    skipped = len(results)
    bar = tqdm(
        total=sum(r.iters for r in queue),
        unit='it',
        disable=not progress,
        dynamic_ncols=True,
        mininterval=2,
        desc=f'{len(queue)} runs to train')
    if skipped:
        tqdm.write(f'{skipped} runs finished before, not trained again')
    running: Dict[int, Tuple[Run, subprocess.Popen]] = {}
    done_iters = 0
    # The runs live in sessions of their own: a terminated study must stop
    # them itself, so SIGTERM and SIGHUP unwind through the clean-up below
    # (and a killed study's runs get SIGTERM from the kernel: _start).
    # Where the handler's exception is swallowed (it ran inside an at-fork
    # hook while a run was being started), the loop raises it again.
    signalled: List[int] = []

    def exit_on_signal(signum, frame) -> None:
        signalled.append(signum)
        raise SystemExit(128 + signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, exit_on_signal)
    try:
        while queue or running:
            for index, slot in enumerate(slots):
                if index not in running and queue:
                    run = queue.pop(0)
                    running[index] = (run, _start(run, slot))
            time.sleep(poll_seconds)
            if signalled:
                raise SystemExit(128 + signalled[0])
            for index, (run, proc) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[index]
                result = _collect(run, proc.returncode)
                write_result(run.run_dir, result)
                results[run.key] = result
                trained.append(run.key)
                done_iters += run.iters
                tqdm.write(_describe(run, result))
                if more_runs is not None:
                    added = add(more_runs(results), front=True)
                    if added:
                        bar.total += added
            bar.n = done_iters + sum(
                min(trained_iters(run.run_dir), run.iters)
                for run, _ in running.values())
            failed = sum(results[k]['status'] != 'ok' for k in trained)
            bar.set_description(f'{len(trained)} done ({failed} failed), '
                                f'{len(running)} running, {len(queue)} queued')
    except BaseException:
        for run, proc in running.values():
            _stop(proc)
        raise
    finally:
        bar.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return results, trained


def _start(run: Run, slot: Slot) -> subprocess.Popen:
    os.makedirs(run.run_dir, exist_ok=True)
    command = list(slot.launcher) + list(run.args)
    if slot.distributed:
        command += ['--launcher', 'pytorch']
    run.started = time.time()
    with open(osp.join(run.run_dir, LOG_FILE), 'w') as log:
        # A session of its own: an interrupt stops the run and, with
        # torchrun, the workers it started, as one group. The run also dies
        # with the study, however the study ends, so that a second call
        # never trains a run twice into one folder.
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                **slot.env
            },
            start_new_session=True,
            preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    if sys.platform.startswith('linux'):
        import ctypes
        pr_set_pdeathsig = 1
        ctypes.CDLL(
            None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _describe(run: Run, result: Dict) -> str:
    head = f"{run.key}: {result['seconds']:.0f} s, "
    if result['status'] != 'ok':
        where = f" ({result['where']})" if result.get('where') else ''
        return head + f"FAILED: {result['error']}{where}"
    s = result['summary']
    return head + ', '.join(f'{k} {s[k]:.2f}'
                            for k in ('mIoU', 'mIoU_tail') if k in s)
