"""Builds the host emulator of the CUDA kernels (csrc/emulated_kernels.cpp
with csrc/cuda_emulator.h) against a folder of kernel sources: the
package's, or a mutated copy (test_emulator_mutations.py). Each build is
kept under the temporary folder by the hash of what went into it, so a
second run, or a second test module, loads it at once."""
import hashlib
import os
import os.path as osp
import subprocess
import tempfile

TEST_CSRC = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc')
FLAGS = ('-std=c++17', '-O1', '-cudart', 'none', '-Xcompiler', '-fPIC',
         '-shared')


def build_emulator(kernel_csrc: str) -> str:
    """The shared library of the emulated kernels built from the sources
    in ``kernel_csrc``; its path."""
    digest = hashlib.sha256(' '.join(FLAGS).encode())
    for folder in (kernel_csrc, TEST_CSRC):
        for name in sorted(os.listdir(folder)):
            if name.endswith(('.cu', '.cuh', '.h', '.cpp')):
                digest.update(name.encode())
                with open(osp.join(folder, name), 'rb') as f:
                    digest.update(f.read())
    cache = osp.join(tempfile.gettempdir(), 'mmseg_arb_emulator')
    library = osp.join(cache, f'{digest.hexdigest()[:20]}.so')
    if not osp.exists(library):
        os.makedirs(cache, exist_ok=True)
        partial = f'{library}.{os.getpid()}'
        build = subprocess.run([
            'nvcc', *FLAGS, f'-I{kernel_csrc}',
            osp.join(TEST_CSRC, 'emulated_kernels.cpp'), '-o', partial
        ],
                               capture_output=True,
                               text=True,
                               timeout=900)
        assert build.returncode == 0, build.stderr[-4000:]
        os.replace(partial, library)  # whole, or not there
    return library
