"""``mmseg-arb check``: its lines and exit status on this machine, a wrong
result made to fail it, the GPU branch's decisions, and its kernel checks
run on the kernels themselves, on the host emulator."""
import emulated_ops
import pytest
import torch

from mmseg_arb.cli import check as cli_check
from mmseg_arb.cli import main
from mmseg_arb.ops import self_check

CPU = torch.device('cpu')
no_gpu = pytest.mark.skipif(
    torch.cuda.is_available(), reason='the command checks the GPUs there')


@no_gpu
def test_without_a_gpu_it_checks_the_pytorch_path_and_says_so(capsys):
    assert main(['check']) == 0
    first, *results, last = capsys.readouterr().out.splitlines()
    assert 'no GPU found (torch is a CPU build)' in first
    assert last == 'all checks passed'
    names = [line.split(':')[0] for line in results]
    assert names == [
        f'PASS  cpu PyTorch path {dtype}, logits x{scale}'
        for dtype in ('float32', 'float16', 'bfloat16')
        for scale in ('1', '100', '10000')
    ] + ['PASS  cpu counting']


@no_gpu
@pytest.mark.parametrize('wrong', ['loss', 'gradient', 'count'])
def test_a_wrong_result_is_a_fail_and_a_non_zero_exit(wrong, capsys,
                                                      monkeypatch):
    if wrong == 'count':
        right = cli_check.class_histogram_pytorch

        def histogram(label, num_classes, ignore_index):
            hist = right(label, num_classes, ignore_index)
            hist[1] += 1
            return hist

        monkeypatch.setattr(cli_check, 'class_histogram_pytorch', histogram)
    else:
        right = self_check.shifted_cross_entropy

        def loss(logits, *args):
            if wrong == 'gradient':  # the loss as it was, its gradient 2%
                # off: bf16 rounds gradients by up to 0.4%.
                out = right(logits, *args)
                return out + 0.02 * (out - out.detach())
            return right(logits, *args) * 1.001

        monkeypatch.setattr(self_check, 'shifted_cross_entropy', loss)
    assert main(['check']) == 1
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if line.startswith('FAIL')]
    if wrong == 'count':
        assert len(failed) == 1 and 'cpu counting' in failed[0]
        assert 'entries [1] differ' in failed[0]
    else:
        # Every dtype and scale, fp16 and bf16 gradients included.
        assert len(failed) == 9
        assert all(f'none {wrong} error' in line for line in failed)
    assert lines[-1] == f'{len(failed)} check(s) failed'


@pytest.mark.parametrize('gpu',
                         ['sm_61', 'disabled', 'broken', 'small', 'large'])
def test_which_checks_a_gpu_gets(gpu, monkeypatch):
    # The GPU branch's decisions, with the device answers and the checks
    # themselves stood in for (they run on the emulator below).
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda index:
                        (6, 1) if gpu == 'sm_61' else (9, 0))
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda index: 'GPU')
    monkeypatch.setattr(
        torch.cuda, 'mem_get_info', lambda index:
        ((8 if gpu == 'small' else 70) * 2**30, 80 * 2**30))
    reason = {
        'disabled': 'disabled by MMSEG_ARB_CUDA=0',
        'broken': 'JIT build failed: RuntimeError: nvcc broke'
    }.get(gpu, 'built at install (mmseg_arb._ext)')
    monkeypatch.setattr(cli_check.cuda_ext, 'load_cuda_ops',
                        lambda: reason.startswith('built'))
    monkeypatch.setattr(cli_check.cuda_ext, 'cuda_ops_status', lambda: reason)

    def stand_in(name):

        def check(device, *args, **kwargs):
            assert device == torch.device('cuda', 1)
            result = self_check.Result(name, True, '')
            return iter([result]) if name.endswith('checks') else result

        return check

    for check in ('kernel_checks', 'pytorch_path_checks', 'check_past_2_31',
                  'check_speed'):
        monkeypatch.setattr(cli_check, check, stand_in(check))
    results = list(cli_check.gpu_checks(1))
    lines = [r.line() for r in results]
    assert lines[0] == 'PASS  cuda:1 capability: GPU, compute capability ' \
        + ('6.1: the kernels need 7.0 (Volta) or newer; ARB-Loss uses the '
           'PyTorch path on it' if gpu == 'sm_61' else '9.0')
    if gpu == 'sm_61':
        assert lines[1:] == ['PASS  pytorch_path_checks: ']
        return
    assert lines[1].startswith(
        f'{"FAIL" if gpu == "broken" else "PASS"}  cuda:1 extension: '
        f'{reason}')
    if gpu in ('disabled', 'broken'):
        assert 'uses the PyTorch path (correct, slower)' in lines[1]
        assert lines[2:] == ['PASS  pytorch_path_checks: ']
        return
    assert lines[2:4] == [
        'PASS  kernel_checks: ', 'PASS  pytorch_path_checks: '
    ]
    assert lines[4] == ('PASS  cuda:1 tensors past 2^31 elements: not run: '
                        '8.0 GiB free, 12 needed' if gpu == 'small' else
                        'PASS  cuda:1 tensors past 2^31 elements: ')
    assert lines[5:] == ['PASS  cuda:1 speed: ']


# ------------------------------------- the kernel checks, on the emulator


@emulated_ops.needs_nvcc
def test_the_kernel_checks_pass_on_the_kernels(kernels, monkeypatch):
    # One logit scale: all three take a minute on the emulator.
    monkeypatch.setattr(cli_check, 'LOGIT_SCALES', (100.0, ))
    kernels()
    results = list(cli_check.kernel_checks(CPU, 'emulated'))
    assert [r.line() for r in results if not r.passed] == []
    assert [r.name for r in results
            ] == ['emulated count kernel', 'emulated prepare kernel'] + [
                f'emulated fused loss {dtype}, logits x100'
                for dtype in ('float32', 'float16', 'bfloat16')
            ]


@emulated_ops.needs_nvcc
@pytest.mark.parametrize('wrong', ['', 'class_histogram', 'arb_loss_backward'])
def test_the_check_past_2_31_elements_at_a_small_size(kernels, wrong):
    # Its references (counts known by construction, a few pixels in
    # float64) at a size the emulator runs; the GPU runs it past 2^31.
    kernels(wrong)
    result = cli_check.check_past_2_31(CPU, big=5003, C=37, S=41)
    assert result.passed == (wrong == '')
    assert ('count of 5003 labels' in result.detail) == \
        (wrong == 'class_histogram')
    assert ('loss of 1517 logits' in result.detail) == \
        (wrong == 'arb_loss_backward')
