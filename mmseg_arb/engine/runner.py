"""A Runner that switches a config's cross-entropy losses to ARB-Loss.

Selected by ``runner_type = 'ARBRunner'`` (see ``configs/_base_/arb.py``);
the top-level ``arb`` dict of the config holds the ARBLoss settings.
"""
import copy

from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from ..config.switch import switch_to_arb, with_class_count_hook


@RUNNERS.register_module()
class ARBRunner(Runner):
    """:class:`mmengine.runner.Runner` whose model config has its softmax
    ``CrossEntropyLoss`` entries replaced by ``ARBLoss`` before building,
    and whose hooks include ``ClassCountHook``. Both edits are idempotent:
    the config it dumps to the work dir runs again as it is."""

    @classmethod
    def from_cfg(cls, cfg: Config) -> Runner:
        cfg = copy.deepcopy(cfg)
        cfg.model = switch_to_arb(cfg.model, **cfg.get('arb', {}))
        cfg.custom_hooks = with_class_count_hook(cfg.get('custom_hooks'))
        return super().from_cfg(cfg)
