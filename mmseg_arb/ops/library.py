"""The ``torch.ops.mmseg_arb`` operators: schemas and shape functions.

The schemas are defined here, in Python, so that the operators exist on
every machine; the CUDA extension (``csrc/binding.cpp``) only adds their
CUDA kernels. Each operator also has a fake implementation (shapes and
dtypes, no data), which PyTorch uses on the ``meta`` device and when
``torch.compile`` traces a model, so tracing goes through these operators
without a graph break. The tests run the whole CUDA-op path on ``meta``
this way, on machines without a GPU.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .histogram_layout import histogram_size

NAMESPACE = 'mmseg_arb'
SCHEMAS = {
    'class_histogram':
    'class_histogram(Tensor label, int num_classes, int ignore_index) '
    '-> Tensor',
    'prepare_counts':
    'prepare_counts(Tensor hist, Tensor(a!) counts, Tensor? class_weight, '
    'str count_mode, float momentum, float smoothing, float tau, '
    'float weight_power, float max_weight_ratio, bool update, '
    'bool avg_non_ignore, int ranks) -> Tensor',
    'arb_loss_forward':
    'arb_loss_forward(Tensor logits, Tensor label, Tensor shift, '
    'Tensor? class_weight, Tensor? weight, int ignore_index, '
    'str reduction, float loss_weight, bool avg_non_ignore, '
    'Tensor? denominator=None) -> (Tensor, Tensor, Tensor)',
    'arb_loss_backward':
    'arb_loss_backward(Tensor grad_loss, Tensor logits, Tensor label, '
    'Tensor shift, Tensor? class_weight, Tensor? weight, '
    'Tensor softmax_stats, '
    'Tensor scale, int ignore_index) -> Tensor',
}

_library = torch.library.Library(NAMESPACE, 'DEF')
for _schema in SCHEMAS.values():
    _library.define(_schema)


def _register_fake(name: str):
    """Decorator: ``fn`` is the fake implementation of op ``name``."""
    # torch >= 2.4: register_fake; 2.2 and 2.3: impl_abstract; older: a
    # Meta kernel, which fake tensors fall back to.
    register = getattr(torch.library, 'register_fake', None) or \
        getattr(torch.library, 'impl_abstract', None)
    if register is not None:
        return register(f'{NAMESPACE}::{name}')

    def as_meta_kernel(fn):
        _library.impl(name, fn, 'Meta')
        return fn

    return as_meta_kernel


def has_cuda_kernels() -> bool:
    """Whether every operator has a CUDA kernel (the extension is loaded)."""
    return all(
        torch._C._dispatch_has_kernel_for_dispatch_key(
            f'{NAMESPACE}::{name}', 'CUDA') for name in SCHEMAS)


@_register_fake('class_histogram')
def _class_histogram(label: Tensor, num_classes: int,
                     ignore_index: int) -> Tensor:
    return label.new_empty(histogram_size(num_classes), dtype=torch.int64)


@_register_fake('prepare_counts')
def _prepare_counts(hist: Tensor, counts: Tensor,
                    class_weight: Optional[Tensor], count_mode: str,
                    momentum: float, smoothing: float, tau: float,
                    weight_power: float, max_weight_ratio: float, update: bool,
                    avg_non_ignore: bool, ranks: int) -> Tensor:
    # float32 (2C + 1,): the shift, the class weights, the mean's
    # denominator; counts in place.
    return counts.new_empty(2 * counts.numel() + 1, dtype=torch.float32)


@_register_fake('arb_loss_forward')
def _arb_loss_forward(
        logits: Tensor,
        label: Tensor,
        shift: Tensor,
        class_weight: Optional[Tensor],
        weight: Optional[Tensor],
        ignore_index: int,
        reduction: str,
        loss_weight: float,
        avg_non_ignore: bool,
        denominator: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    # The loss (per pixel for 'none', else a scalar), each pixel's softmax
    # statistics (its largest shifted logit, then the log of its softmax
    # sum) and the backward's scale, float32 whatever the logits.
    out_shape = label.shape if reduction == 'none' else ()
    loss = logits.new_empty(out_shape, dtype=torch.float32)
    softmax_stats = logits.new_empty(
        (2, ) + tuple(label.shape), dtype=torch.float32)
    return loss, softmax_stats, logits.new_empty(1, dtype=torch.float32)


@_register_fake('arb_loss_backward')
def _arb_loss_backward(grad_loss: Tensor, logits: Tensor, label: Tensor,
                       shift: Tensor, class_weight: Optional[Tensor],
                       weight: Optional[Tensor], softmax_stats: Tensor,
                       scale: Tensor, ignore_index: int) -> Tensor:
    return torch.empty_like(logits, memory_format=torch.contiguous_format)
