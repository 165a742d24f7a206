"""Hadamard rotation + int8 quantisation, exact: a float64 reference and an int8 tensor-core kernel."""
