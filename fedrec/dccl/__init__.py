"""DCCL (Yao et al., KDD 2021): options, sample arrays and the pure training steps shared by
the cloud (strategies/dccl.py) and the devices (clients/dccl_device.py)."""
