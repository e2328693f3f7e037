"""Helpers shared by the test modules (signing, stores, servers)."""
