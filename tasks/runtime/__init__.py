"""The shipped ONNX graph at run time: ONNX Runtime sessions over raw samples, `headstart predict`, and the int8
variant's quantiser and speed check. Imports neither torch nor Prefect at module level."""
