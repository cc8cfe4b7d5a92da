# mmseg's namesake (without _arb) with ARB-Loss: docs/datasets.md#configs
_base_ = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['mmseg_arb'], allow_failed_imports=False)
custom_hooks = [dict(type='ClassCountHook')]
model = dict(
    decode_head=dict(
        loss_decode=dict(type='ARBLoss', count_mode='batch', loss_weight=1.0)),
    auxiliary_head=dict(
        loss_decode=dict(type='ARBLoss', count_mode='batch', loss_weight=0.4)))
