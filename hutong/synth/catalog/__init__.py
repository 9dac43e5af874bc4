"""Code tables of the synthetic region's clinical content, one module per code system.

Data only: each module cites where its codes come from.
"""
