"""The CUDA glue: TensorRT and pycuda imported on first use, and the selected GPU's identity.

The target uses pycuda (contexts, pinned memory, streams); cuda-python is not a substitute.
"""

from __future__ import annotations

import contextlib

from wae_deploy.core.errors import UserError
from wae_deploy.core.extras import install_command

INSTALL_HINT = f"{install_command('tensorrt')} (on a Jetson, TensorRT comes with JetPack)"


def import_runtime():
    """(tensorrt, pycuda.driver), or a UserError that says what to install."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise UserError(f"tensorrt is not installed: {INSTALL_HINT}") from e
    try:
        import pycuda.driver as cuda
    except ImportError as e:       # also raised when libcuda (the NVIDIA driver) is absent
        raise UserError(f"pycuda is not usable ({e}): {INSTALL_HINT}") from e
    return trt, cuda


def gpu_identity(cuda, device: int) -> tuple[str, tuple[int, int], int]:
    """(name, compute capability, SM count) of the selected GPU."""
    try:
        cuda.init()
        if cuda.Device.count() <= device:
            raise UserError(f"no CUDA GPU {device} found")
        dev = cuda.Device(device)
        sms = dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
        return dev.name(), tuple(dev.compute_capability()), int(sms)
    except UserError:
        raise
    except Exception as e:         # pycuda's driver errors: no driver, no device
        raise UserError(f"no CUDA GPU found ({e})") from e


@contextlib.contextmanager
def on_device(cuda, device: int):
    """The device's primary context current for the block: the one the CUDA runtime inside TensorRT uses."""
    ctx = cuda.Device(device).retain_primary_context()
    ctx.push()
    try:
        yield
    finally:
        ctx.pop()
        ctx.detach()
