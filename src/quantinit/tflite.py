"""Real 8-bit integer inference with TensorFlow Lite (LiteRT), next to the paper's simulation.

The paper quantizes with TensorFlow's simulated ("fake") quint8: every folded weight tensor and
every activation is mapped onto 256 levels of an asymmetric uint8 grid, evaluated in float.
A TFLite full-integer model (`convert_full_integer`) differs in these ways (each is checked
on converted models in tests/test_tflite.py):

* Activations are int8 (zero point -128 after a ReLU), not uint8; uint8 appears only at the
  model boundary, where a QUANTIZE op converts the uint8 input and the int8 softmax output.
* Activation ranges are calibrated by the plain min and max over the representative data
  (widened to include 0), with no percentile clipping or moving averages:
  scale = (max - min) / 255.
* Weights are int8, symmetric (zero point 0) on the narrow range [-127, 127]:
  scale = max|w| / 127. With ``per_channel=False`` there is one scale per tensor (for
  FULLY_CONNECTED the converter stores that one scale repeated once per output unit; all
  entries are equal); with ``per_channel=True`` conv and depthwise kernels get one scale per
  output channel.
* Biases are int32 with scale = input_scale * weight_scale and zero point 0 (so they are
  effectively unquantized).
* Rescaling(1/255) is folded into the first convolution's kernel, so the uint8 input is the raw
  0..255 image with scale 1 and zero point 0; ReLUs are fused into the preceding op, and
  BatchNorm is folded by the converter itself.
* The softmax output has the fixed quantization scale 1/256, zero point -128 (int8), i.e.
  uint8 zero point 0 at the output: probabilities come back in steps of 1/256 and can reach
  at most 255/256, whatever the representative data.

Converter and interpreter chatter (saved-model dumps, MLIR/absl logs) is redirected to a
temporary file while converting; if conversion fails, that log is attached to the exception.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

import numpy as np

# Ops whose inputs are (activation, weights, bias) in TFLite's builtin kernels.
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """Send fd 1/2 (C++ logs) and Python's stdout/stderr to a temporary file.

    On an exception, the captured text is added to it as a note and the exception propagates.
    The file descriptors are process-wide, so other threads' output is captured too meanwhile.
    """
    with tempfile.TemporaryFile(mode="w+b") as log:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = []
        try:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(log.fileno(), fd)
        except OSError:  # no real file descriptors (unusual embedding): don't redirect
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            saved = []
        text_log = open(os.dup(log.fileno()), "w", buffering=1, closefd=True)
        try:
            with (
                contextlib.redirect_stdout(text_log),
                contextlib.redirect_stderr(text_log),
                warnings.catch_warnings(),
            ):
                warnings.filterwarnings(
                    "ignore", message="Statistics for quantized inputs were expected"
                )
                yield
        except BaseException as error:
            text_log.flush()
            log.seek(0)
            captured = log.read().decode("utf-8", errors="replace").strip()
            if captured and hasattr(error, "add_note"):
                error.add_note("TFLite converter output:\n" + captured[-20000:])
            raise
        finally:
            text_log.close()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)


def convert_full_integer(
    model, representative_images: np.ndarray, per_channel: bool = False, quiet: bool = True
) -> bytes:
    """Convert a Keras model to a full-integer TFLite flatbuffer with uint8 input and output.

    `representative_images` (N, 32, 32, 3), uint8 or float in 0..255 (the model's own input
    scale), calibrate the activation ranges, fed one image at a time. ``per_channel=False``
    (the default) gives per-tensor weight scales like the paper's quint8.
    """
    import tensorflow as tf

    images = np.asarray(representative_images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"representative_images must be (N, H, W, C), N > 0; got {images.shape}")

    def representative_dataset():
        for index in range(len(images)):
            yield [images[index : index + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    converter._experimental_disable_per_channel = not per_channel
    with quiet_output() if quiet else contextlib.nullcontext():
        return bytes(converter.convert())


def make_interpreter(model_bytes: bytes, num_threads: int | None = None, delegates: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (
        OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    with quiet_output():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        return Interpreter(
            model_content=bytes(model_bytes),
            num_threads=num_threads,
            experimental_op_resolver_type=resolver,
        )


def tflite_tensor_details(model_bytes: bytes) -> list[dict]:
    """Every quantized tensor of a converted model, in tensor-index order.

    Each dict has: index, name, shape (list), dtype (numpy dtype name), scales and zero_points
    (lists: one entry per tensor, or per channel along quantized_dimension), quantized_dimension,
    constant (True for tensors no op produces, other than model inputs: weights and biases),
    and role: "weight" or "bias" for inputs 1 and 2 of a conv/depthwise/fully-connected op,
    "input" / "output" for the model boundary, else "activation" (or "constant"), with op, the
    name of the op that consumes the weight/bias or produces the activation (None otherwise).
    """
    interpreter = make_interpreter(model_bytes)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    produced, roles = {}, {}
    for op in ops:
        if op["op_name"] == "DELEGATE":  # XNNPACK's stand-in for the ops it took over
            continue
        for tensor in op["outputs"]:
            produced[int(tensor)] = op["op_name"]
        if op["op_name"] in WEIGHTED_OPS:
            inputs = [int(t) for t in op["inputs"]]
            for position, role in ((1, "weight"), (2, "bias")):
                if len(inputs) > position and inputs[position] >= 0:
                    roles[inputs[position]] = (role, op["op_name"])
    model_inputs = {d["index"] for d in interpreter.get_input_details()}
    model_outputs = {d["index"] for d in interpreter.get_output_details()}

    details = []
    for tensor in interpreter.get_tensor_details():
        quant = tensor["quantization_parameters"]
        scales = [float(s) for s in quant["scales"]]
        if not scales:
            continue
        index = int(tensor["index"])
        constant = index not in produced and index not in model_inputs
        if index in roles:
            role, op_name = roles[index]
        elif index in model_inputs:
            role, op_name = "input", None
        elif index in model_outputs:
            role, op_name = "output", produced.get(index)
        elif constant:
            role, op_name = "constant", None
        else:
            role, op_name = "activation", produced.get(index)
        details.append(
            {
                "index": index,
                "name": tensor["name"],
                "shape": [int(n) for n in tensor["shape"]],
                "dtype": np.dtype(tensor["dtype"]).name,
                "scales": scales,
                "zero_points": [int(z) for z in quant["zero_points"]],
                "quantized_dimension": int(quant["quantized_dimension"]),
                "constant": constant,
                "role": role,
                "op": op_name,
            }
        )
    return details


def _quantize_input(images: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    if images.dtype == dtype and scale == 1.0 and zero_point == 0:
        return images
    q = np.rint(images.astype(np.float64) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def run_tflite(
    model_bytes: bytes,
    images: np.ndarray,
    batch_size: int = 256,
    num_threads: int | None = None,
) -> np.ndarray:
    """Class probabilities (N, classes) float32 from a full-integer model on `images`.

    `images` (N, 32, 32, 3) are uint8 or float in 0..255; they are quantized with the input
    tensor's own scale and zero point (for the converted models: scale 1, zero point 0, i.e.
    rounded to uint8). Batches of `batch_size`; the last one is zero-padded and cut.
    The uint8 output is dequantized with the output tensor's scale and zero point.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = np.asarray(images)
    interpreter = make_interpreter(model_bytes, num_threads)
    (input_detail,) = interpreter.get_input_details()
    (output_detail,) = interpreter.get_output_details()
    in_scale, in_zero = input_detail["quantization"]
    out_scale, out_zero = output_detail["quantization"]
    in_dtype = np.dtype(input_detail["dtype"])
    if in_scale == 0:
        raise ValueError("the model's input is not quantized (scale 0)")
    if len(images) == 0:
        return np.zeros((0, *output_detail["shape"][1:]), np.float32)

    batch = min(batch_size, len(images))
    quantized = _quantize_input(images, in_scale, in_zero, in_dtype)
    try:
        raw = _invoke_batches(interpreter, quantized, batch)
    except RuntimeError as error:
        # LiteRT's default XNNPACK delegate refuses models with a dead layer (an activation
        # whose calibrated range is all zeros, common in networks that did not learn):
        # "failed to create XNNPACK runtime". LiteRT's builtin kernels run them.
        if "XNNPACK" not in str(error):
            raise
        message = f"LiteRT's XNNPACK delegate failed ({error}); using builtin kernels"
        warnings.warn(message, stacklevel=2)
        builtin = make_interpreter(model_bytes, num_threads, delegates=False)
        raw = _invoke_batches(builtin, quantized, batch)
    if out_scale == 0:  # not quantized: already real values
        return raw
    return ((raw - np.float32(out_zero)) * np.float32(out_scale)).astype(np.float32)


def _invoke_batches(interpreter, quantized: np.ndarray, batch: int) -> np.ndarray:
    """Raw outputs for `quantized` inputs, `batch` at a time (last batch zero-padded)."""
    (input_detail,) = interpreter.get_input_details()
    (output_detail,) = interpreter.get_output_details()
    interpreter.resize_tensor_input(input_detail["index"], [batch, *quantized.shape[1:]])
    interpreter.allocate_tensors()
    outputs = []
    for start in range(0, len(quantized), batch):
        chunk = quantized[start : start + batch]
        count = len(chunk)
        if count < batch:
            padding = np.zeros((batch - count, *chunk.shape[1:]), quantized.dtype)
            chunk = np.concatenate([chunk, padding])
        interpreter.set_tensor(input_detail["index"], np.ascontiguousarray(chunk))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_detail["index"])[:count].copy())
    return np.concatenate(outputs).astype(np.float32)


class TFLiteLayers:
    """The dequantized output of every weighted op (conv, depthwise, fully connected; a fused
    ReLU included) of a full-integer model, op by op, for comparing the deployed int8 model
    with the float and simulated ones layer by layer.

    LiteRT's builtin kernels with every intermediate tensor kept (XNNPACK would hide them).
    In a chain network the i-th weighted op is the i-th kernel layer (analysis.kernel_layers),
    its output that layer's quantized tensor: callers match them by position.
    """

    def __init__(self, model_bytes: bytes, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        with quiet_output():
            self.interpreter = Interpreter(
                model_content=bytes(model_bytes),
                num_threads=num_threads,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                experimental_preserve_all_tensors=True,
            )
        self.interpreter.allocate_tensors()
        ops = [op for op in self.interpreter._get_ops_details() if op["op_name"] in WEIGHTED_OPS]
        self.outputs = [int(op["outputs"][0]) for op in ops]
        self.op_names = [op["op_name"] for op in ops]
        (self._input,) = self.interpreter.get_input_details()
        self._batch = None

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        """Each weighted op's dequantized float32 output on `images` (N, 32, 32, 3) in 0..255,
        quantized with the input tensor's own scale and zero point, as run_tflite does."""
        scale, zero_point = self._input["quantization"]
        quantized = _quantize_input(
            np.asarray(images), scale, zero_point, np.dtype(self._input["dtype"])
        )
        if self._batch != len(quantized):
            self.interpreter.resize_tensor_input(self._input["index"], list(quantized.shape))
            self.interpreter.allocate_tensors()
            self._batch = len(quantized)
        self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(quantized))
        self.interpreter.invoke()
        outputs = []
        for index in self.outputs:
            detail = self.interpreter._get_tensor_details(index, 0)
            out_scale, out_zero = detail["quantization"]
            raw = self.interpreter.get_tensor(index).astype(np.float32)
            outputs.append((raw - np.float32(out_zero)) * np.float32(out_scale))
        return outputs
