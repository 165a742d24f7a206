"""One folder per op: ``reference.py`` is the specification in plain PyTorch, ``triton.py`` the kernel."""
