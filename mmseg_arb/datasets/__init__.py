from .synthetic import (LAYOUTS, SyntheticSegmentationGenerator, SyntheticSpec,
                        generate_dataset, target_shares)

__all__ = [
    'LAYOUTS', 'SyntheticSegmentationGenerator', 'SyntheticSpec',
    'generate_dataset', 'target_shares'
]
