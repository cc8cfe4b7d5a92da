"""CamVid (Brostow et al. 2008) in its 11-class SegNet version, as mmseg's
datasets are: images and label maps per split under ``img_dir/<split>`` and
``ann_dir/<split>``, both PNGs of the same name, labels 0..10 and 255 for
void. ``mmseg-arb prepare camvid`` writes that layout from the SegNet
release (``mmseg_arb/datasets/prepare_camvid.py``).

The classes and colours are SegNet's, in its order
(``Scripts/test_segmentation_camvid.py`` of ``alexgkendall/SegNet-Tutorial``);
their training pixel shares are in docs/datasets.md.
"""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

CLASSES = ('Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol',
           'Fence', 'Car', 'Pedestrian', 'Bicyclist')
# RGB, as SegNet draws them.
PALETTE = ([128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64,
                                                           128], [60, 40, 222],
           [128, 128,
            0], [192, 128,
                 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192])


@DATASETS.register_module()
class CamVidDataset(BaseSegDataset):
    """CamVid, 11 classes (SegNet's), void as ``ignore_index`` 255.

    ``img_suffix`` and ``seg_map_suffix`` are both ``'.png'``: an image and
    its label map share their file name. ``reduce_zero_label`` is False:
    label 0 is a class (Sky).
    """
    METAINFO = dict(classes=CLASSES, palette=[list(c) for c in PALETTE])

    def __init__(self,
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = False,
                 **kwargs) -> None:
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            **kwargs)
