"""tools/gpu_check.sh's own logic, dry-run without a GPU: every step is
called, in order, and the script ends with one line per check and a
non-zero exit when one failed. (Python, nvidia-smi, nvcc and
compute-sanitizer are stand-ins that log their calls.)"""
import os
import os.path as osp
import stat
import subprocess

import pytest

from helpers import ROOT

FAKE_PYTHON = '''#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$*" in
  *"$FAIL_ON"*) exit 1 ;;
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


def dry_run(tmp_path, fail_on='no step fails'):
    bin_dir = str(tmp_path / 'bin')
    os.makedirs(bin_dir)
    python = write_tool(bin_dir, 'fake-python', FAKE_PYTHON)
    write_tool(bin_dir, 'nvidia-smi', '#!/bin/sh\necho "name, memory"\n')
    write_tool(bin_dir, 'nvcc', '#!/bin/sh\necho "Cuda compilation tools"\n')
    write_tool(bin_dir, 'compute-sanitizer',
               '#!/usr/bin/env bash\ncase "$*" in *"$FAIL_ON"*) exit 9 ;; '
               'esac\nshift 4\nexec "$@"\n')
    calls = tmp_path / 'calls.txt'
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}',
               PYTHON=python, OUT=str(tmp_path / 'out'), CALLS=str(calls),
               FAIL_ON=fail_on)
    result = subprocess.run(['bash', osp.join(ROOT, 'tools', 'gpu_check.sh')],
                            capture_output=True, text=True, env=env,
                            timeout=120)
    summary = result.stdout.split('== summary\n')[-1].splitlines()
    return result, summary, calls.read_text().splitlines()


def test_every_check_runs_and_ends_with_a_line_each(tmp_path):
    result, summary, calls = dry_run(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split()[0] for line in summary] == ['PASS'] * 10
    names = ' | '.join(summary)
    for check in ('build of the extension', 'mmseg-arb check',
                  'GPU tests: 42 passed',
                  'benchmark fp32', 'benchmark bf16', 'benchmark small',
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
    assert summary == ['FAIL  build of the extension']
    assert calls[-1].startswith('setup.py')  # nothing after the build
