"""Malicious devices (issue 5): who attacks (population), how (kinds, crafting), the wrapper."""
