"""One folder per op: ``reference.py`` is the specification in plain PyTorch, ``triton.py`` the kernel.

The folders' ``__init__`` files import nothing, so a reference loads where Triton is not installed.
"""
