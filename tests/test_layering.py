"""A training step walks downward: the loss (``models``) calls the counting
(``counting``), which calls the kernels and their PyTorch twins (``ops``),
and nothing calls back up. Checked on the imports (parsed, so a lazy import
inside a function counts too) and on a traced training step. The kernels
(``ops``) import nothing of ours above them (the command line, configs,
engine, datasets included) and not mmseg."""
import ast
import os.path as osp
import sys
from pathlib import Path

import torch

import mmseg_arb
from mmseg_arb.counting import begin_step, end_step
from mmseg_arb.models.losses import ARBLoss

PACKAGE = Path(osp.dirname(mmseg_arb.__file__))
# Top to bottom: a package may import those below it, never those above.
LAYERS = ('models', 'counting', 'ops')
# What every layer may use.
SHARED = ('utils', 'version')


def imported_names(path: Path):
    """The absolute names of the modules (and the names from them) that
    ``path`` imports."""
    module = '.'.join(('mmseg_arb', ) +
                      path.relative_to(PACKAGE).with_suffix('').parts)
    package = module.rpartition('.')[0]  # an __init__'s: its folder
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                name = '.'.join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            names = [name] + [f'{name}.{alias.name}' for alias in node.names]
        else:
            continue
        yield from names


def imported_modules(path: Path):
    """The absolute names of the ``mmseg_arb`` modules ``path`` imports."""
    return (n for n in imported_names(path) if n.startswith('mmseg_arb.'))


def test_imports_only_go_down():
    upward = []
    for layer in LAYERS:
        allowed = LAYERS[LAYERS.index(layer):] + SHARED
        for path in sorted((PACKAGE / layer).rglob('*.py')):
            where = str(path.relative_to(PACKAGE))
            upward += [
                f'{where} imports {name}' for name in imported_modules(path)
                if name.split('.')[1] not in allowed
            ]
    assert not upward, '\n'.join(upward)


def test_the_kernels_import_no_mmseg():
    # What `mmseg-arb check` runs against mmseg (its speed baseline) lives
    # in cli/check.py; the kernels, their twins and the comparisons of the
    # first-use guard need no mmseg.
    found = [
        f'{path.relative_to(PACKAGE)} imports {name}'
        for path in sorted((PACKAGE / 'ops').rglob('*.py'))
        for name in imported_names(path) if name.split('.')[0] == 'mmseg'
    ]
    assert not found, '\n'.join(found)


def test_the_parser_sees_relative_and_lazy_imports(tmp_path):
    # The premise of the test above, on a file written like ours.
    source = PACKAGE / 'ops' / 'class_count.py'
    names = set(imported_modules(source))
    assert 'mmseg_arb.ops.cuda_ext' in names  # `from . import cuda_ext`
    assert 'mmseg_arb.ops.histogram_layout.histogram_size' in names
    # A lazy absolute import inside a function, as mmseg's would be.
    assert 'mmengine.logging.print_log' in set(
        imported_names(PACKAGE / 'ops' / 'cuda_ext.py'))


def test_a_training_step_never_calls_back_up():
    """Every call between our packages during an ARBLoss training step and
    its backward goes from a layer to one below it (or within one)."""
    loss_fn = ARBLoss(
        count_mode='cumulative',
        weight_power=0.5,
        class_weight=[1.0, 2.0, 1.0, 1.0])
    logits = torch.randn(2, 4, 6, 6, requires_grad=True)
    label = torch.randint(4, (2, 6, 6))
    calls = []

    def layer_of_frame(frame):
        path = Path(frame.f_code.co_filename)
        try:
            return path.relative_to(PACKAGE).parts[0]
        except ValueError:
            return None

    def profile(frame, event, arg):
        if event != 'call':
            return
        callee = layer_of_frame(frame)
        if callee not in LAYERS:
            return
        caller = frame.f_back
        while caller is not None and layer_of_frame(caller) is None:
            caller = caller.f_back
        source = layer_of_frame(caller) if caller is not None else None
        if source in LAYERS and source != callee:
            calls.append((source, callee, frame.f_code.co_name))

    begin_step()
    sys.setprofile(profile)
    try:
        loss_fn(logits, label).backward()
    finally:
        sys.setprofile(None)
        end_step()
    assert calls  # the trace sees the step
    upward = [c for c in calls if LAYERS.index(c[0]) > LAYERS.index(c[1])]
    assert not upward, upward
    assert {(a, b)
            for a, b, _ in calls} >= {('models', 'counting'),
                                      ('counting', 'ops')}
