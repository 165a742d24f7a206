"""Hadamard rotation + int8 quantisation with float64 arithmetic."""
