"""Simulated devices: the on-device side of every protocol, hosted by Flower NumPyClients."""
