# DeepLabV3+ R-50-D8 with ARB-Loss using a fixed class-count prior: the
# pixel counts of the whole ADE20K training set (after reduce_zero_label),
# measured once by
#
#     mmseg-arb class-counts \
#         configs/deeplabv3plus/deeplabv3plus_r50-d8_arb_4xb4-80k_ade20k-512x512.py
#
# which writes the JSON read here. Unlike count_mode='batch', the weights do
# not vary with the crop: a class keeps its dataset-wide rarity in every step.
_base_ = './deeplabv3plus_r50-d8_arb_4xb4-80k_ade20k-512x512.py'
# Relative to the training set's data_root, wherever that is (looked up
# by ClassCountHook); mmseg-arb class-counts writes it there.
class_counts = 'class_stats_train.json'
model = dict(
    decode_head=dict(
        loss_decode=dict(count_mode='prior', class_counts=class_counts)),
    auxiliary_head=dict(
        loss_decode=dict(count_mode='prior', class_counts=class_counts)))
