"""edgecl: on-device class-incremental learning for sound classification.

Kept import-light on purpose: firmware_export's runtime imports edgecl.errors on machines
without torch.
"""

__version__ = "0.1.0"
