"""framepack-server: self-hosted FramePack image-to-video."""

__version__ = "0.1.0"
