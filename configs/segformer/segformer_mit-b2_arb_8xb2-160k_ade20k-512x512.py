# SegFormer MiT-B2 with ARB-Loss, ade20k (150 classes), 512x512, 160k.
# Identical to mmseg's segformer_mit-b2_8xb2-160k_ade20k-512x512.py but for the loss.
_base_ = 'mmseg::segformer/segformer_mit-b2_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmseg_arb'], allow_failed_imports=False)
# count_mode='batch': n_j are the pixel counts of the current batch, summed
# over all GPUs (the paper's ARB-Loss); every rank applies the same weights.
# SegFormer has no auxiliary head. No _delete_ needed: ARBLoss accepts the CE
# keys left over from the base.
model = dict(
    decode_head=dict(
        loss_decode=dict(
            type='ARBLoss', count_mode='batch', num_classes=150,
            loss_weight=1.0)))
