"""Storage: the one Repository interface and its SQL implementation."""

from hutong.store.database import Database, open_database
from hutong.store.repository import Repository, Stored

__all__ = ["Database", "Repository", "Stored", "open_database"]
