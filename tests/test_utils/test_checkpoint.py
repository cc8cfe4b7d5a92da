"""mmengine checkpoints under torch >= 2.6's ``weights_only`` loading:
importing ``mmseg_arb`` registers their data types and patches nothing;
``ClassCountHook`` writes them without function references."""
import pickle
import subprocess
import sys

import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

from mmseg_arb.engine import ClassCountHook
from mmseg_arb.utils.checkpoint import mmengine_checkpoint_globals

IMPORT_CHANGES = '''
import builtins
import torch
from mmengine.logging import HistoryBuffer
own = dict(vars(HistoryBuffer))
safe = list(torch.serialization.get_safe_globals())
import mmseg_arb
from mmseg_arb.utils.checkpoint import mmengine_checkpoint_globals
changed = sorted(k for k in set(own) | set(vars(HistoryBuffer))
                 if own.get(k) is not vars(HistoryBuffer).get(k))
assert not changed, f'HistoryBuffer changed by the import: {changed}'
added = [g for g in torch.serialization.get_safe_globals() if g not in safe]
ours = mmengine_checkpoint_globals()
assert all(g in added for g in ours), (ours, added)
# torch registers its own types as its modules load (DTensor, ...).
others = [g for g in added if g not in ours]
assert all(g.__module__.startswith('torch.') for g in others), others
assert builtins.getattr not in added
print('ok')
'''


@pytest.mark.slow
def test_importing_mmseg_arb_patches_nothing_and_registers_data_types():
    result = subprocess.run([sys.executable, '-c', IMPORT_CHANGES],
                            capture_output=True,
                            text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == 'ok'


def _checkpoint(hub: MessageHub) -> dict:
    """What ``Runner.save_checkpoint`` hands the hooks, message hub part."""
    return dict(meta=dict(iter=4), message_hub=hub.state_dict())


def _hub() -> MessageHub:
    hub = MessageHub.get_instance('test_checkpoint')
    for value in (3.0, 1.0, 2.0):
        hub.update_scalar('train/loss', value)
    return hub


def test_a_checkpoint_written_through_the_hook_loads_weights_only(tmp_path):
    hub = _hub()
    checkpoint = _checkpoint(hub)
    ClassCountHook().before_save_checkpoint(None, checkpoint)
    torch.save(checkpoint, tmp_path / 'iter_4.pth')

    loaded = torch.load(tmp_path / 'iter_4.pth', weights_only=True)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert type(buffer) is HistoryBuffer
    assert buffer.data[0].tolist() == [3.0, 1.0, 2.0]
    assert (buffer.mean(), buffer.min(), buffer.current()) == (2.0, 1.0, 2.0)
    resumed = MessageHub.get_instance('test_checkpoint_resumed')
    resumed.load_state_dict(loaded['message_hub'])
    assert resumed.get_scalar('train/loss').current() == 2.0
    # The run's own buffer is mmengine's, as it was.
    assert type(hub.get_scalar('train/loss')) is HistoryBuffer


def test_without_the_hook_mmengine_writes_function_references(tmp_path):
    """What the hook is for: mmengine's own pickling of a HistoryBuffer
    (left unchanged) holds getattr, which weights_only refuses."""
    checkpoint = _checkpoint(_hub())
    assert b'getattr' in pickle.dumps(checkpoint, protocol=2)
    torch.save(checkpoint, tmp_path / 'iter_4.pth')
    with pytest.raises(pickle.UnpicklingError, match='getattr'):
        torch.load(tmp_path / 'iter_4.pth', weights_only=True)


def test_the_registered_types_are_all_a_checkpoint_needs(tmp_path):
    hub = _hub()
    hub.update_info('iter', 4)
    checkpoint = _checkpoint(hub)
    ClassCountHook().before_save_checkpoint(None, checkpoint)
    torch.save(checkpoint, tmp_path / 'iter_4.pth')
    registered = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError):
            torch.load(tmp_path / 'iter_4.pth', weights_only=True)
        with torch.serialization.safe_globals(mmengine_checkpoint_globals()):
            torch.load(tmp_path / 'iter_4.pth', weights_only=True)
    finally:
        torch.serialization.add_safe_globals(registered)
