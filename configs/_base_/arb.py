# One _base_ line that switches any MMSegmentation config to ARB-Loss:
#
#     _base_ = ['./my_config.py', '<path to mmseg-arb>/configs/_base_/arb.py']
#
# Why not a `model = dict(...)` fragment: mmengine forbids two _base_ files
# defining the same key, and every model config defines `model`. So this
# fragment names a runner instead: ARBRunner (mmseg_arb/engine/runner.py)
# rewrites the model config before the model is built, turning every softmax
# CrossEntropyLoss (decode and auxiliary heads) into an ARBLoss that keeps
# its loss_weight, class_weight, avg_non_ignore and reduction and adds the
# settings below. mmseg's own tools/train.py honours `runner_type`, and so
# do our tools/train.py and tools/test.py; mmseg's tools/test.py builds the
# plain Runner, so its model keeps CrossEntropyLoss, which testing never
# calls (the config dumped to the work dir holds ARBLoss already).
custom_imports = dict(imports=['mmseg_arb'], allow_failed_imports=False)
runner_type = 'ARBRunner'
# Keyword arguments of every ARBLoss created (see ARBLoss for all of them).
# 'batch': counts of the current batch, summed over GPUs, logits shifted by
# tau * log n with tau = 1 and no class weights (weight_power = 0): the
# paper's loss, the default, to reproduce the paper. weight_power = p weights
# each pixel of class y by n_y^-p from the same counts. Which loss to use on
# long-tailed data: the README's "Which loss should I use?". The
# pre-registered study on CamVid (docs/loss_study.md) recommends
# class-weighted cross-entropy (weights n^-0.5), not a setting of ARBLoss.
arb = dict(count_mode='batch')
