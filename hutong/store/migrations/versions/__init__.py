"""Ordered schema migrations, one module per revision (``vNNNN_name.py``, revision "NNNN")."""
