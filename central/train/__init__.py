"""ATLAS."""
