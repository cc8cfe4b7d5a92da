"""The ``torch.ops.mmseg_arb`` operators exist on every machine, describe
their outputs without data, and trace under ``torch.compile``."""
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import ROOT

from mmseg_arb.ops import fused_arb_loss
from mmseg_arb.ops.library import SCHEMAS, has_cuda_kernels

META = torch.device('meta')
ops = torch.ops.mmseg_arb


def test_ops_are_defined_without_the_extension():
    for name, schema in SCHEMAS.items():
        assert str(getattr(ops, name).default._schema) == \
            f'mmseg_arb::{schema}'


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only check')
def test_without_the_extension_there_are_no_kernels_to_run():
    assert not has_cuda_kernels()
    with pytest.raises(NotImplementedError, match="'CPU' backend"):
        ops.class_histogram(torch.zeros(4, dtype=torch.long), 3, 255)


@pytest.mark.parametrize('dtype', [torch.int64, torch.int32, torch.uint8])
def test_fake_class_histogram(dtype):
    hist = ops.class_histogram(
        torch.empty(3, 5, dtype=dtype, device=META), 19, 255)
    # 19 counts, the bad pixels and their two extremes.
    assert hist.shape == (23, ) and hist.dtype == torch.int64


@pytest.mark.parametrize('dtype',
                         [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('reduction', ['none', 'sum', 'mean'])
def test_fake_loss_forward_and_backward(dtype, reduction):
    logits = torch.empty(2, 19, 5, 7, dtype=dtype, device=META)
    label = torch.empty(2, 5, 7, dtype=torch.int64, device=META)
    shift = torch.empty(19, device=META)
    loss, stats, scale = ops.arb_loss_forward(logits, label, shift, None, None,
                                              255, reduction, 0.4, False)
    assert loss.shape == (label.shape if reduction == 'none' else ())
    # Per pixel: the largest shifted logit and the log of the softmax sum.
    assert stats.shape == (2, ) + label.shape and scale.shape == (1, )
    assert {t.dtype for t in (loss, stats, scale)} == {torch.float32}
    grad = ops.arb_loss_backward(
        torch.empty_like(loss), logits.transpose(2, 3), label, shift, shift,
        torch.empty(2, 5, 7, device=META), stats, scale, 255)
    # The kernel writes a contiguous gradient in the logits' type.
    assert grad.shape == (2, 19, 7, 5) and grad.dtype == dtype
    assert grad.is_contiguous()


@pytest.mark.slow
def test_fakes_are_meta_kernels_where_torch_lacks_register_fake():
    # torch < 2.2 has neither register_fake nor impl_abstract.
    code = textwrap.dedent('''
        import importlib, sys, types, torch
        del torch.library.register_fake, torch.library.impl_abstract
        # The module and what it imports alone: no package __init__, no
        # mmengine.
        for name in ('mmseg_arb', 'mmseg_arb.ops'):
            sys.modules[name] = types.ModuleType(name)
            sys.modules[name].__path__ = [name.replace('.', '/')]
        importlib.import_module('mmseg_arb.ops.library')
        label = torch.empty(3, 5, dtype=torch.uint8, device='meta')
        print(tuple(torch.ops.mmseg_arb.class_histogram(label, 19, 255).shape))
    ''')
    result = subprocess.run([sys.executable, '-c', code],
                            cwd=ROOT,
                            capture_output=True,
                            text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == '(23,)'


def test_fake_prepare_counts_returns_the_shift_weights_and_denominator():
    counts = torch.empty(19, dtype=torch.float64, device=META)
    prepared = ops.prepare_counts(
        torch.empty(23, dtype=torch.int64, device=META), counts,
        torch.empty(19, device=META), 'cumulative', 0.0, 0.0, 1.0, 0.5, 1000.0,
        True, False, 2)
    assert prepared.shape == (39, ) and prepared.dtype == torch.float32


@pytest.mark.slow
def test_fused_loss_compiles_without_graph_breaks():
    # fullgraph=True fails on any graph break; aot_eager also traces the
    # backward through AOTAutograd with the fake implementations.
    torch._dynamo.reset()

    def loss_and_grad(logits, label, shift, weight):
        return fused_arb_loss(logits, label, shift, weight, None, 255, 'mean',
                              0.4, True)

    compiled = torch.compile(
        loss_and_grad, fullgraph=True, backend='aot_eager')
    logits = torch.empty(2, 19, 8, 8, device=META, requires_grad=True)
    label = torch.empty(2, 8, 8, dtype=torch.int64, device=META)
    loss = compiled(logits, label, torch.empty(19, device=META),
                    torch.empty(19, device=META))
    loss.backward()
    assert loss.shape == () and logits.grad.shape == logits.shape
    torch._dynamo.reset()
