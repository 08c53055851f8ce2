"""The tokenizer as an ONNX graph: a batch of UTF-8 strings -> `input_ids`, `attention_mask` (batch, tokens), the
Hugging Face WordPiece tokenizer's ids exactly, so a text model's graph takes raw strings.

Built on onnxruntime-extensions' `BertTokenizer` op (domain `ai.onnx.contrib`; a session must register the
extensions library: `tasks.core.hardware.add_extension_ops`). Three things the op does not do are done around it:
- **batches**: the op tokenizes one string per call, so an ONNX `Loop` runs it over the batch;
- **truncation**: each text's ids are cut to `max_length - 1` and the final `[SEP]` appended again, as Hugging Face's
  `truncation=True` does;
- **padding**: each row is padded with 0 (`[PAD]`) to `max_length`, then the batch is cut to its longest row
  (dynamic padding), and the attention mask is built from the lengths, not from the ids (a text containing the
  literal string "[PAD]" still attends to it).
Special-token strings typed into a text ("[SEP]", "[PAD]") are text, not control tokens, in the graph and in the
Hugging Face reference alike (`split_special_tokens=True`): a user's text cannot inject a segment break.
Its converter (`gen_processing_models`) copies `strip_accents` from the Hugging Face tokenizer, where None means
"follow lower-casing"; the op reads 0 as "keep accents", so for an uncased vocabulary (MiniLM) "naïve café" gave other
ids. The attribute is set from Hugging Face's rule here; a test holds the ids identical on accents, CJK, emoji,
tabs and newlines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TEXT_INPUT = "texts"
CONTRIB = "ai.onnx.contrib"


def hf_tokenizer(folder: Path):
    """The Hugging Face tokenizer of a local model folder (never the hub); a one-line error when it is not a BERT
    WordPiece tokenizer, the kind the in-graph op reproduces."""
    from transformers import AutoTokenizer

    from tasks.core.errors import UserError

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if "Bert" not in type(tok).__name__ or not hasattr(tok, "vocab"):
        raise UserError(f"backbone.name: '{folder}' has a {type(tok).__name__}; headstart's in-graph tokenizer "
                        f"handles BERT WordPiece tokenizers (BERT, MiniLM, DistilBERT, ...)")
    return tok


def hf_token_ids(tokenizer, texts, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64, padded to the longest text, truncated to `max_length`: the reference the
    graph must reproduce, and what fine-tuning trains on."""
    enc = tokenizer(list(texts), max_length=max_length, truncation=True, padding="longest", return_tensors="np",
                    return_token_type_ids=False, split_special_tokens=True)
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def _strip_accents(tokenizer) -> int:
    """Hugging Face's rule: strip_accents None follows lower-casing."""
    norm = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    lower, strip = bool(getattr(tokenizer, "do_lower_case", True)), None
    state = norm.__getstate__() if norm is not None and hasattr(norm, "__getstate__") else None
    if state:
        import json

        cfg = json.loads(state)
        lower, strip = cfg.get("lowercase", lower), cfg.get("strip_accents")
    return int(lower if strip is None else strip)


def _bert_tokenizer_node(tokenizer) -> onnx.NodeProto:
    """The extensions' BertTokenizer node for `tokenizer`, with strip_accents set by Hugging Face's rule."""
    from onnxruntime_extensions import gen_processing_models

    pre, _ = gen_processing_models(tokenizer, pre_kwargs={})
    (node,) = [n for n in pre.graph.node if n.op_type == "BertTokenizer"]
    for attr in node.attribute:
        if attr.name == "strip_accents":
            attr.i = _strip_accents(tokenizer)
    return node


def _loop_body(tok_node: onnx.NodeProto, max_length: int) -> onnx.GraphProto:
    """One iteration: tokenize texts[i], truncate keeping the last id ([SEP]), pad to max_length; emit the row and
    its length."""
    n = helper.make_node
    node = onnx.NodeProto()
    node.CopyFrom(tok_node)
    del node.input[:], node.output[:]
    node.input.append("text_i")
    node.output.extend(["ids_i", "types_i", "mask_i", "offsets_i"])
    node.name = "bert_tokenizer"
    c = lambda name, value: numpy_helper.from_array(np.asarray(value, dtype=np.int64), name)  # noqa: E731
    nodes = [
        n("Unsqueeze", ["i", "axis0"], ["i1"]),
        n("Add", ["i1", "one"], ["i1_end"]),
        n("Slice", ["texts_outer", "i1", "i1_end", "axis0"], ["text_i"]),
        node,
        n("Shape", ["ids_i"], ["len_full"]),
        n("Min", ["len_full", "max_len"], ["len_i"]),
        n("Sub", ["len_i", "one"], ["keep"]),
        n("Slice", ["ids_i", "zero", "keep", "axis0"], ["head_ids"]),
        n("Sub", ["len_full", "one"], ["last_start"]),
        n("Slice", ["ids_i", "last_start", "len_full", "axis0"], ["last_id"]),
        n("Concat", ["head_ids", "last_id"], ["cut_ids"], axis=0),
        n("Sub", ["max_len", "len_i"], ["pad_n"]),
        n("Concat", ["zero", "pad_n"], ["pads"], axis=0),
        n("Pad", ["cut_ids", "pads"], ["row"], mode="constant"),
        n("Identity", ["cond_in"], ["cond_out"]),
    ]
    inits = [c("axis0", [0]), c("one", [1]), c("zero", [0]), c("max_len", [max_length])]
    return helper.make_graph(
        nodes, "tokenize_one",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("row", TensorProto.INT64, [max_length]),
         helper.make_tensor_value_info("len_i", TensorProto.INT64, [1])],
        initializer=inits)


def tokenizer_graph(tokenizer, max_length: int, opset: int) -> onnx.ModelProto:
    """`texts` (batch,) strings -> `input_ids`, `attention_mask` (batch, tokens) int64, tokens = the longest row
    (at most `max_length`). Token ids equal `hf_token_ids(tokenizer, texts, max_length)`."""
    n = helper.make_node
    c = lambda name, value: numpy_helper.from_array(np.asarray(value, dtype=np.int64), name)  # noqa: E731
    body = _loop_body(_bert_tokenizer_node(tokenizer), max_length)
    # the body reads `texts` from the outer scope under another name: ONNX scoping forbids shadowing it
    nodes = [
        n("Identity", [TEXT_INPUT], ["texts_outer"]),
        n("Shape", [TEXT_INPUT], ["batch"]),
        n("Squeeze", ["batch", "axis0"], ["trip"]),
        n("Loop", ["trip", "true"], ["rows", "lens"], body=body),
        n("Reshape", ["lens", "flat"], ["lengths"]),
        n("ReduceMax", ["lengths"], ["longest"], keepdims=1),
        n("Slice", ["rows", "zero", "longest", "axis1"], ["input_ids"]),
        n("Squeeze", ["longest", "axis0"], ["longest_scalar"]),
        n("Range", ["zero_scalar", "longest_scalar", "one_scalar"], ["positions"]),
        n("Unsqueeze", ["lengths", "axis1"], ["lengths_col"]),
        n("Less", ["positions", "lengths_col"], ["attends"]),
        n("Cast", ["attends"], ["attention_mask"], to=TensorProto.INT64),
    ]
    inits = [c("axis0", [0]), c("axis1", [1]), c("zero", [0]), c("flat", [-1]),
             numpy_helper.from_array(np.array(True), "true"),
             numpy_helper.from_array(np.array(0, dtype=np.int64), "zero_scalar"),
             numpy_helper.from_array(np.array(1, dtype=np.int64), "one_scalar")]
    graph = helper.make_graph(
        nodes, "tokenizer", [helper.make_tensor_value_info(TEXT_INPUT, TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(CONTRIB, 1)])
    model.ir_version = 9
    return model


def prepend_tokenizer(encoder: onnx.ModelProto, tokenizer, max_length: int, opset: int) -> onnx.ModelProto:
    """`encoder` (inputs `input_ids`, `attention_mask`) with the tokenizer graph in front: strings in."""
    from onnx import compose

    tok = tokenizer_graph(tokenizer, max_length, opset)
    tok.ir_version = encoder.ir_version
    names = [i.name for i in encoder.graph.input]
    io_map = [(x, x) for x in ("input_ids", "attention_mask") if x in names]
    merged = compose.merge_models(tok, encoder, io_map=io_map, prefix1="tokenizer/", prefix2="")
    # merge_models prefixes graph inputs and outputs of the first model too: give the input its public name back
    for node in merged.graph.node:
        for i, name in enumerate(node.input):
            if name == f"tokenizer/{TEXT_INPUT}":
                node.input[i] = TEXT_INPUT
    merged.graph.input[0].name = TEXT_INPUT
    # merge_models lists the default domain once per model ("" and, from the exporter, "" again): one is valid ONNX
    seen: dict[str, int] = {}
    for o in merged.opset_import:
        seen[o.domain or ""] = max(seen.get(o.domain or "", 0), o.version)
    del merged.opset_import[:]
    merged.opset_import.extend(helper.make_opsetid(d, v) for d, v in seen.items())
    return merged


def token_mismatches(tokenizer, max_length: int, opset: int, texts) -> list[int]:
    """Indices of `texts` whose in-graph token ids (or attention mask) differ from Hugging Face's, each text run
    alone and the lot as one batch (so padding and the batch cut are checked too)."""
    import onnxruntime as ort

    from tasks.core.hardware import add_extension_ops

    opts = ort.SessionOptions()
    add_extension_ops(opts)
    session = ort.InferenceSession(tokenizer_graph(tokenizer, max_length, opset).SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    texts = np.asarray(list(texts), dtype=object)
    bad = set()
    ids, mask = session.run(None, {TEXT_INPUT: texts})
    ref_ids, ref_mask = hf_token_ids(tokenizer, texts, max_length)
    if ids.shape != ref_ids.shape:
        return list(range(len(texts)))
    bad |= {i for i in range(len(texts)) if (ids[i] != ref_ids[i]).any() or (mask[i] != ref_mask[i]).any()}
    for i, text in enumerate(texts):
        one, _ = session.run(None, {TEXT_INPUT: texts[i : i + 1]})
        ref_one, _ = hf_token_ids(tokenizer, [text], max_length)
        if one.shape != ref_one.shape or (one != ref_one).any():
            bad.add(i)
    return sorted(bad)
