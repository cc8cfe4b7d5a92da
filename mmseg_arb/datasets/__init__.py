from .prepare import prepare_synthetic
from .synthetic import (LAYOUTS, SyntheticSegmentationGenerator, SyntheticSpec,
                        generate_dataset, target_shares)

__all__ = [
    'LAYOUTS', 'SyntheticSegmentationGenerator', 'SyntheticSpec',
    'generate_dataset', 'prepare_synthetic', 'target_shares'
]
