"""Graph transformations: each takes a GraphModule and returns one."""
