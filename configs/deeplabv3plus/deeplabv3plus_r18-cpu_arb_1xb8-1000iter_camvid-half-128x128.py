# CamVid on a CPU with ARB-Loss: identical to its cross-entropy baseline
# deeplabv3plus_r18-cpu_1xb8-1000iter_camvid-half-128x128.py but for the
# losses of the decode and auxiliary heads.
_base_ = './deeplabv3plus_r18-cpu_1xb8-1000iter_camvid-half-128x128.py'
# Counts each step's labels once for both heads and reports bad labels at
# logging steps (see mmseg_arb/engine/hooks/class_count_hook.py).
custom_hooks = [dict(type='ClassCountHook')]
# 'batch': counts of the current batch (the paper's ARB-Loss).
model = dict(
    decode_head=dict(
        loss_decode=dict(type='ARBLoss', count_mode='batch', loss_weight=1.0)),
    auxiliary_head=dict(
        loss_decode=dict(type='ARBLoss', count_mode='batch', loss_weight=0.4)))
