"""Networks built from diffcore.nn."""
from .unet import UNet, UNetConfig

__all__ = ["UNet", "UNetConfig"]
