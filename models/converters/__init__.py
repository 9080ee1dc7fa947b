"""Teachable Machine image exports (Keras .h5, TensorFlow.js, TensorFlow Lite) to ONNX, without TensorFlow.

Each converter reads its format with a small pure reader (h5py, JSON, the tflite flatbuffer
schema) and writes the ONNX graph op by op. The ONNX model takes the float32 [batch, 224, 224, 3]
tensor that models.teachable prepares (x / 127.5 - 1) and gives class probabilities.
"""

from models.converters.exports import (
    EXPORT_FORMATS,
    Converted,
    convert_export,
    convert_keras_h5,
    convert_tfjs_export,
    convert_tflite_export,
    find_export,
)

__all__ = [
    "EXPORT_FORMATS",
    "Converted",
    "convert_export",
    "convert_keras_h5",
    "convert_tfjs_export",
    "convert_tflite_export",
    "find_export",
]
