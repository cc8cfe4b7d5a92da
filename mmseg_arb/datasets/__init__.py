from .camvid import CamVidDataset
from .prepare import prepare_synthetic
from .prepare_camvid import CamVidSourceError, prepare_camvid
from .synthetic import (LAYOUTS, SyntheticSegmentationGenerator, SyntheticSpec,
                        generate_dataset, target_shares)

__all__ = [
    'CamVidDataset', 'CamVidSourceError', 'LAYOUTS',
    'SyntheticSegmentationGenerator', 'SyntheticSpec', 'generate_dataset',
    'prepare_camvid', 'prepare_synthetic', 'target_shares'
]
