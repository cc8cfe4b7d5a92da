from .class_count import count_classes, register_backend

__all__ = ['count_classes', 'register_backend']
