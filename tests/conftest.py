"""Session set-up that must run before any test module is imported.

Without a CUDA GPU the Triton kernels (``form="triton"``) are tested through Triton's interpreter, which works only
if ``TRITON_INTERPRET=1`` is set before triton is first imported: triton.language binds its own helpers (tl.zeros,
tl.sum, ...) to the interpreter or the GPU compiler at import, and importing tttlm imports triton (transformers ->
torch._dynamo), so ``tests/ops/test_triton.py`` cannot switch it on itself once another test module has been
collected. On a machine with a CUDA GPU the variable is left alone and the kernels run on the GPU. An explicit
``TRITON_INTERPRET`` in the environment is respected.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
