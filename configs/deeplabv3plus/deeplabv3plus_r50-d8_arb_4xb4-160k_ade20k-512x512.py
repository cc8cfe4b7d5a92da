# DeepLabV3+ R50-D8 with ARB-Loss, ade20k (150 classes), 512x512, 160k.
# Identical to mmseg's deeplabv3plus_r50-d8_4xb4-160k_ade20k-512x512.py but for the losses.
_base_ = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmseg_arb'], allow_failed_imports=False)
# Counts each training step's labels once for both heads, reports bad labels
# at logging steps without stalling the GPU, and finds a prior's file under
# the data root (see mmseg_arb/engine/hooks/class_count_hook.py).
custom_hooks = [dict(type='ClassCountHook')]
# count_mode='batch': n_j are the pixel counts of the current batch, summed
# over all GPUs (the paper's ARB-Loss); every rank applies the same weights.
# On long-tailed data, docs/loss_study.md recommends count_mode='cumulative',
# tau=0, weight_power=0.5 instead: class weights n^-0.5 from the running counts,
# no shift (README: "Which loss should I use?"). Keep the paper's loss to
# reproduce the paper.
# The auxiliary FCN head is trained with ARB too, at mmseg's weight 0.4, so that
# its gradient does not reintroduce the repulsion imbalance into the backbone.
# No _delete_ needed: ARBLoss accepts the CE keys left over from the base.
model = dict(
    decode_head=dict(
        loss_decode=dict(
            type='ARBLoss', count_mode='batch', loss_weight=1.0)),
    auxiliary_head=dict(
        loss_decode=dict(
            type='ARBLoss', count_mode='batch', loss_weight=0.4)))
