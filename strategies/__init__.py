"""Flower strategies: one protocol per file, all over the device-level base in base.py."""
