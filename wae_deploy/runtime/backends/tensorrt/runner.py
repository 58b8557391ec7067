"""The runner: a deserialized engine, device buffers allocated once, any batch served in chunks.

An engine may carry several optimisation profiles (one per timed batch, opt = that batch); each
chunk runs on the profile tuned for its size.
"""

from __future__ import annotations

import contextlib

import numpy as np

from wae_deploy.core.errors import UserError
from wae_deploy.runtime.backends.base import Runner
from wae_deploy.runtime.onnx_meta import INPUT


class TensorRTRunner(Runner):
    """Device buffers sized for the largest profile's max batch, allocated once; freed on close()."""

    def __init__(self, trt, cuda, plan: bytes, device: int):
        self._cuda, self._buffers, self._engine = cuda, {}, None
        # The primary context is the one the CUDA runtime inside TensorRT uses: share it, don't make another.
        self._ctx = cuda.Device(device).retain_primary_context()
        try:
            with self._active():
                self._setup(trt, plan)
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def _active(self):
        self._ctx.push()
        try:
            yield
        finally:
            self._ctx.pop()

    def _setup(self, trt, plan: bytes) -> None:
        cuda = self._cuda
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise UserError("TensorRT could not deserialize the engine (its log above says why)")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._output = "logits" if "logits" in self._outputs else self._outputs[0]
        shapes = [tuple(tuple(s) for s in self._engine.get_tensor_profile_shape(INPUT, i))
                  for i in range(self._engine.num_optimization_profiles)]
        self._profiles = [(lo[0], opt[0], hi[0]) for lo, opt, hi in shapes]
        self._stream = cuda.Stream()
        self._profile = None
        largest = max(range(len(shapes)), key=lambda i: shapes[i][2][0])
        hi = shapes[largest][2]
        self._item_shape = hi[1:]
        self._use_profile(largest)
        if not self._context.set_input_shape(INPUT, hi):     # so output shapes below are the largest batch's
            raise UserError(f"TensorRT refused the profile's own max shape {hi}: the engine is unusable")
        self._host = {}
        for name in [INPUT, *self._outputs]:
            shape = hi if name == INPUT else tuple(self._context.get_tensor_shape(name))
            self._host[name] = cuda.pagelocked_empty(shape, trt.nptype(self._engine.get_tensor_dtype(name)))
            self._buffers[name] = cuda.mem_alloc(self._host[name].nbytes)
        self._set_addresses()

    def _set_addresses(self) -> None:
        for name, buf in self._buffers.items():
            if not self._context.set_tensor_address(name, int(buf)):
                raise RuntimeError(f"TensorRT refused the address of {name!r}")

    def _use_profile(self, index: int) -> None:
        """Switch the context to profile `index` (the input shape must be set again after)."""
        if index != self._profile:
            self._context.set_optimization_profile_async(index, self._stream.handle)
            self._profile = index

    def profile_for(self, n: int) -> int:
        """The profile tuned for a batch of n (opt == n), else the one with the nearest opt that takes n."""
        fits = [i for i, (lo, _, hi) in enumerate(self._profiles) if lo <= n <= hi]
        return min(fits, key=lambda i: (abs(self._profiles[i][1] - n), i))

    @property
    def max_batch(self) -> int:
        return max(p[2] for p in self._profiles)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Any batch size: served in chunks the profiles take (bench's accuracy step feeds 100 at once)."""
        batch = np.asarray(batch)
        if tuple(batch.shape[1:]) != tuple(self._item_shape):
            raise UserError(f"batch items are {tuple(batch.shape[1:])}, the engine takes {tuple(self._item_shape)}")
        return np.concatenate([self._infer_chunk(c) for c in self.chunks(batch)])

    def _infer_chunk(self, chunk: np.ndarray) -> np.ndarray:
        n = len(chunk)
        # A tail below every profile's min batch is padded up to it; the padding's outputs are dropped.
        padded = max(n, min(p[0] for p in self._profiles))
        host_in, host_out = self._host[INPUT][:padded], self._host[self._output][:padded]
        host_in[:n] = chunk                      # into pinned memory (and the engine's input dtype)
        host_in[n:] = 0
        cuda = self._cuda
        with self._active():
            self._use_profile(self.profile_for(padded))
            if not self._context.set_input_shape(INPUT, host_in.shape):
                raise RuntimeError(f"TensorRT refused input shape {host_in.shape} inside its own profile")
            cuda.memcpy_htod_async(self._buffers[INPUT], host_in, self._stream)
            if not self._context.execute_async_v3(stream_handle=self._stream.handle):
                raise RuntimeError("TensorRT execution failed (its log above says why)")
            cuda.memcpy_dtoh_async(host_out, self._buffers[self._output], self._stream)
            self._stream.synchronize()
        return host_out[:n].astype(np.float32, copy=True)

    def close(self) -> None:
        if self._ctx is None:
            return
        with self._active():                     # TensorRT objects and buffers go while their context is current
            for buf in self._buffers.values():
                buf.free()
            self._buffers.clear()
            self._host = self._stream = self._context = self._engine = self._runtime = None
        self._ctx.detach()
        self._ctx = None
