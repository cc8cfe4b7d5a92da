# SegFormer MiT-B0 with ARB-Loss, CamVid (11 classes), 360x480, 40k.
# Identical to segformer_mit-b0_4xb4-40k_camvid-360x480.py (cross-entropy) but
# for the loss.
_base_ = './segformer_mit-b0_4xb4-40k_camvid-360x480.py'
# Counts each training step's labels once, reports bad labels at logging
# steps without stalling the GPU, and finds a prior's file under the data
# root (see mmseg_arb/engine/hooks/class_count_hook.py).
custom_hooks = [dict(type='ClassCountHook')]
# count_mode='batch': n_j are the pixel counts of the current batch, summed
# over all GPUs (the paper's ARB-Loss). SegFormer has no auxiliary head.
model = dict(
    decode_head=dict(
        loss_decode=dict(type='ARBLoss', count_mode='batch', loss_weight=1.0)))
