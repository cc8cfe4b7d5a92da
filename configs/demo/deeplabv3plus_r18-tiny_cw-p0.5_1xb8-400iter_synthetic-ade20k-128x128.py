# The demo with class-weighted cross-entropy, the README's recommendation
# (the CamVid loss study, docs/loss_study.md): identical to its
# cross-entropy baseline but for the class weights n^-0.5 (scaled to a mean
# of 1 per training pixel) of both heads' losses. The weights are a file
# beside the training counts, which
#   mmseg-arb class-counts THIS_CONFIG --weight-power 0.5
# writes (`make demo` writes it for its data root). reduction='none':
# mmseg 1.2.2's class-weighted mean fails on ignored pixels
# (open-mmlab/mmsegmentation#3734); the runner averages the pixels' losses.
_base_ = './deeplabv3plus_r18-tiny_1xb8-400iter_synthetic-ade20k-128x128.py'
model = dict(
    decode_head=dict(
        loss_decode=dict(
            class_weight='data/synthetic_ade20k/class_weight_train_p0.5.json',
            reduction='none')),
    auxiliary_head=dict(
        loss_decode=dict(
            class_weight='data/synthetic_ade20k/class_weight_train_p0.5.json',
            reduction='none')))
