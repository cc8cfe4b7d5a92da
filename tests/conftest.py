import os
import sys

# Make tests/reference.py importable as `reference` from every test folder.
sys.path.insert(0, os.path.dirname(__file__))
