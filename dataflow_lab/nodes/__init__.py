"""Nodes: the base class, generated CRUD and bulk nodes, Python callables, and the registry."""
