"""tools/gpu_check.sh's own logic, dry-run without a GPU: every step is
called, in order, each within its budget, and the script ends with one line
per check and a non-zero exit when one failed or did not finish. (Python,
nvidia-smi, nvcc and compute-sanitizer are stand-ins that log their
calls.)"""
import os
import os.path as osp
import re
import stat
import subprocess
import time

import pytest
from helpers import ROOT

FAKE_PYTHON = '''#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$*" in
  *"$FAIL_ON"*) exit 1 ;;
  *"$HANG_ON"*) exec sleep 60 ;;
esac
case "$*" in
  *pytest*) echo "42 passed in 1.00s" ;;
esac
exit 0
'''


def write_tool(folder, name, text):
    path = osp.join(folder, name)
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return path


def dry_run(tmp_path,
            fail_on='no step fails',
            hang_on='no step hangs',
            sanitizer=True,
            **budgets):
    bin_dir = str(tmp_path / 'bin')
    os.makedirs(bin_dir)
    python = write_tool(bin_dir, 'fake-python', FAKE_PYTHON)
    write_tool(bin_dir, 'nvidia-smi', '#!/bin/sh\necho "name, memory"\n')
    write_tool(bin_dir, 'nvcc', '#!/bin/sh\necho "Cuda compilation tools"\n')
    if sanitizer:
        write_tool(
            bin_dir, 'compute-sanitizer',
            '#!/usr/bin/env bash\ncase "$*" in *"$FAIL_ON"*) exit 9 ;; '
            '*"$HANG_ON"*) exec sleep 60 ;; esac\nshift 4\n'
            'exec "$@"\n')
    calls = tmp_path / 'calls.txt'
    env = dict(
        os.environ,
        PATH=f'{bin_dir}:/usr/bin:/bin',
        PYTHON=python,
        OUT=str(tmp_path / 'out'),
        CALLS=str(calls),
        FAIL_ON=fail_on,
        HANG_ON=hang_on,
        CUDA_HOME=str(tmp_path),
        **{
            f'BUDGET_{k.upper()}': str(v)
            for k, v in budgets.items()
        })
    result = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'gpu_check.sh')],
        capture_output=True,
        text=True,
        env=env,
        timeout=120)
    summary = result.stdout.split('== summary\n')[-1].splitlines()
    return result, summary, calls.read_text().splitlines()


def test_every_check_runs_and_ends_with_a_line_each(tmp_path):
    result, summary, calls = dry_run(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split()[0] for line in summary] == ['PASS'] * 10
    names = ' | '.join(summary)
    for check in ('build of the extension', 'mmseg-arb check',
                  'GPU tests: 42 passed', 'benchmark fp32', 'benchmark bf16',
                  'benchmark small',
                  'benchmark odd (--sections loss --shape 8 19 769 769',
                  'compute-sanitizer memcheck', 'compute-sanitizer racecheck',
                  'compute-sanitizer synccheck'):
        assert check in names
    assert calls[1].startswith('setup.py -q build_ext --inplace')
    # A user's check right after the build, before the GPU tests.
    check = calls.index('-m mmseg_arb.cli check')
    assert check < min(i for i, c in enumerate(calls) if 'pytest' in c)
    assert any('tests/test_ops/test_cuda_ops.py' in c for c in calls)


@pytest.mark.parametrize('step,line', [
    ('--shape 8 19 769 769', 'FAIL  benchmark odd'),
    ('mmseg_arb.cli check', 'FAIL  mmseg-arb check'),
    ('--tool racecheck', 'FAIL  compute-sanitizer racecheck'),
])
def test_a_failed_check_is_named_and_fails_the_run(tmp_path, step, line):
    result, summary, _ = dry_run(tmp_path, fail_on=step)
    assert result.returncode == 1
    assert any(s.startswith(line) for s in summary), summary
    assert sum(s.startswith('PASS') for s in summary) == 9


def test_a_failed_build_stops_there(tmp_path):
    result, summary, calls = dry_run(tmp_path, fail_on='build_ext')
    assert result.returncode == 1
    assert summary == ['FAIL  build of the extension: exit 1']
    assert calls[-1].startswith('setup.py')  # nothing after the build


def test_the_budgets_fit_in_six_minutes(tmp_path):
    result, _, _ = dry_run(tmp_path)
    total = re.search(r'== budget: .*: (\d+) s in all', result.stdout)
    assert total and int(total.group(1)) <= 360, result.stdout


# Budgets of a few seconds; the stand-in of the step named hangs.
SHORT = dict(
    setup=1,
    build=1,
    check=1,
    tests=1,
    bench=1,
    memcheck=1,
    racecheck=1,
    synccheck=1)


@pytest.mark.parametrize('step,line', [
    ('--tool memcheck', 'FAIL  compute-sanitizer memcheck: did not finish'),
    ('--tool racecheck', 'FAIL  compute-sanitizer racecheck: did not finish'),
    ('--tool synccheck', 'FAIL  compute-sanitizer synccheck: did not finish'),
    ('test_cuda_ops.py tests/test_ops/test_cuda_ext_fallback.py',
     'FAIL  GPU tests: did not finish'),
    ('--shape 8 19 769 769', 'FAIL  benchmark odd'),
    ('mmseg_arb.cli check', 'FAIL  mmseg-arb check: did not finish'),
])
def test_a_step_that_does_not_finish_fails_with_the_reason(
        tmp_path, step, line):
    started = time.monotonic()
    result, summary, _ = dry_run(tmp_path, hang_on=step, **SHORT)
    took = time.monotonic() - started
    assert result.returncode == 1
    failed, = [s for s in summary if s.startswith('FAIL')]
    assert failed.startswith(line) and 'did not finish in' in failed, summary
    assert sum(s.startswith('PASS') for s in summary) == 9
    # Cut at its budget: the stand-in would hang for a minute.
    assert took < 30, took


def test_no_sanitizer_is_a_fail(tmp_path):
    result, summary, _ = dry_run(tmp_path, sanitizer=False)
    assert result.returncode == 1
    assert summary[-1].startswith('FAIL  compute-sanitizer not found'), \
        summary
