# SegFormer MiT-B1 with ARB-Loss, ade20k (150 classes), 512x512, 160k.
# Identical to mmseg's segformer_mit-b1_8xb2-160k_ade20k-512x512.py but for the loss.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'
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
# SegFormer has no auxiliary head. No _delete_ needed: ARBLoss accepts the CE
# keys left over from the base.
model = dict(
    decode_head=dict(
        loss_decode=dict(
            type='ARBLoss', count_mode='batch', loss_weight=1.0)))
