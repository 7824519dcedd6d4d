"""Streamed Gemma 4 export: trace a weightless skeleton, then fill its weights one tensor (chunk) at a time.

Why: loading the 12B in fp32, tracing it with its weights, and then loading the fp32 graph again to quantize needs
well over 100 GB of RAM. Here the graph is traced from a model whose parameters are `torch.empty` placeholders
(never written, so the kernel backs them with its shared zero page and RSS does not grow; a zero-stride
`expand` would not do: matmul copies it to contiguous memory), exported with `export_params=False` and no
constant folding so that every parameter stays a graph input named by its state-dict key. Those inputs are then
turned into initializers read lazily from the safetensors files (safe_open + get_slice), a block of rows at a
time; a MatMul weight is quantized to int4 block by block as it is read (MatMulNBits columns are independent, so
the result is bit-identical to quantizing the whole tensor) and every block goes straight into the external data
file. Peak memory is the graph proto plus one block, whatever the size of the checkpoint.

The trace itself never sees a full-size tensor either: torch.onnx.export serialises every parameter it is given
(its per-node ONNX shape inference builds a proto holding the parameter's data), ~1.5x the fp32 size of the model
even for never-written placeholders. So the graph is traced from copies of the config whose hidden / intermediate
/ vocab sizes (the sizes that only reach the graph through weight shapes and the I/O dims that carry them) are
shrunk, twice with two different shrunk sizes: the two graphs must be identical but for those dims, which proves
that no size was baked into an op, attribute or constant; the dims are then rewritten to the checkpoint's sizes
(see trace_weightless).
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .quantize import DEFAULT_PLAN, BlockPlan

log = logging.getLogger("model_export.gemma4")

# text_config sizes that only appear in weight shapes and in the I/O dims that carry them (never in an op, an
# attribute or a constant: trace_weightless proves it for each export by tracing at two of these size sets)
SIZE_KEYS = ("hidden_size", "intermediate_size", "vocab_size")
TRACE_SIZES: tuple[dict[str, int], dict[str, int]] = (
    {"hidden_size": 40, "intermediate_size": 72, "vocab_size": 88},
    {"hidden_size": 56, "intermediate_size": 104, "vocab_size": 120},
)
BLOCK_BYTES = 64 << 20  # fp32 bytes read per block: bounds the working set of the weight-filling phase
_ALIGN = 4096  # large tensors start on a page boundary (lets onnxruntime mmap them)
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


class SizeBakedIn(RuntimeError):
    """The traced graph depends on a size that the weightless trace shrinks; the message names the node."""


class MissingTensor(KeyError):
    """A tensor the graph needs is not in the checkpoint's safetensors files; the message names it and the fix."""

    def __str__(self) -> str:
        return str(self.args[0])


# ---------------------------------------------------------------------------------------------- placeholder model


@contextmanager
def _meta_parameters() -> Iterator[None]:
    """Build modules with parameters on the meta device (no memory, no init work); buffers stay real.

    Buffers must stay real: the rotary inverse frequencies and the embedding scale are computed in __init__ from
    the config and are traced as constants. Persistent buffers (layer_scalar) become graph inputs like parameters.
    """
    import torch
    from torch import nn

    original = nn.Module.register_parameter

    def register(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.detach().to("meta"), requires_grad=False)
        original(self, name, param)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def placeholder_model(config):
    """Gemma4UnifiedForConditionalGeneration with float32 `torch.empty` parameters of the right shapes.

    Tied parameters stay tied (one placeholder per meta parameter). Small ones are zeroed so that the trace never
    sees uninitialised garbage; large ones come from mmap and read as zeros without being committed.
    """
    import torch
    from torch import nn
    from transformers import Gemma4UnifiedForConditionalGeneration

    with _meta_parameters():
        model = Gemma4UnifiedForConditionalGeneration(config).eval()
    made: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for pname, p in list(module._parameters.items()):
            if p is None or p.device.type != "meta":
                continue
            if id(p) not in made:
                big = p.numel() * 4 >= 1 << 20
                data = torch.empty(p.shape, dtype=torch.float32) if big else torch.zeros(p.shape, dtype=torch.float32)
                made[id(p)] = nn.Parameter(data, requires_grad=False)
            module._parameters[pname] = made[id(p)]
    return model


def meta_model(config):
    """The full-size model with every parameter on the meta device: its shapes, tied names and buffers (the
    embedding scale sqrt(hidden_size)) at no memory cost. It cannot be traced (meta tensors have no values)."""
    from transformers import Gemma4UnifiedForConditionalGeneration

    with _meta_parameters():
        return Gemma4UnifiedForConditionalGeneration(config).eval()


def trace_configs(config, sizes: Sequence[dict[str, int]] = TRACE_SIZES) -> list:
    """Copies of `config` with the text sizes of SIZE_KEYS replaced by each of `sizes` (the vocabulary kept
    above the padding id, which the embedding needs)."""
    out = []
    floor = int(getattr(config.text_config, "pad_token_id", None) or 0) + 1
    for i, shrunk in enumerate(sizes):
        c = copy.deepcopy(config)
        for key, value in shrunk.items():
            if key == "vocab_size" and value < floor:
                value = floor + 32 * i  # still different in each copy
            setattr(c.text_config, key, value)
        out.append(c)
    return out


def source_names(model) -> dict[int, list[str]]:
    """id(tensor) -> every state-dict name of the full model it appears under (tied weights have several)."""
    names: dict[int, list[str]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        names.setdefault(id(t), []).append(name)
    return names


# ------------------------------------------------------------------------------------------------ checkpoint index


@dataclass
class CheckpointIndex:
    """Model state-dict name -> (safetensors file, key in that file), after transformers' load-time renames."""

    root: Path
    where: dict[str, tuple[Path, str]]

    @classmethod
    def open(cls, root: Path, model_type: str) -> CheckpointIndex:
        from safetensors import safe_open

        renames = _renames(model_type)
        where: dict[str, tuple[Path, str]] = {}
        for f in sorted(Path(root).glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    name = key
                    for pattern, target in renames:
                        name = re.sub(pattern, target, name)
                    where[name] = (f, key)
        return cls(Path(root), where)

    def locate(self, candidates: list[str], graph_name: str, graph_file: str) -> tuple[Path, str]:
        for name in candidates:
            if name in self.where:
                return self.where[name]
        raise MissingTensor(
            f"{self.root} has no tensor {candidates[0]!r} (needed for {graph_name!r} of {graph_file}): the checkpoint "
            "is incomplete or not a gemma4_unified checkpoint; re-download all *.safetensors shards listed in "
            "model.safetensors.index.json (e.g. `hf download <repo> --include '*.safetensors'`)"
        )


def _renames(model_type: str) -> list[tuple[str, str]]:
    """transformers' checkpoint-key renames for this model type (gemma4_unified: vision names only). A fused or
    split conversion would change tensor contents, which this exporter does not replay: refuse it loudly."""
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    except ImportError:  # older transformers: no conversion at load time
        return []
    out: list[tuple[str, str]] = []
    for conv in get_checkpoint_conversion_mapping(model_type) or []:
        if type(conv).__name__ != "WeightRenaming":
            raise NotImplementedError(
                f"transformers converts {model_type} weights with {type(conv).__name__} at load time; the streamed "
                "exporter only replays renames: extend model_export/stream_export.py for it"
            )
        for src, dst in zip(conv.source_patterns, conv.target_patterns):
            out.append((src, dst))
    return out


# ---------------------------------------------------------------------------------------------- external data sink


@dataclass
class DataSink:
    """Appends tensors to one external data file, remembering nothing but the current size."""

    path: Path
    size: int = 0
    _f: object = field(default=None, repr=False)

    def __enter__(self) -> DataSink:
        self._f = self.path.open("wb")
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()  # type: ignore[attr-defined]

    def reserve(self, nbytes: int) -> int:
        """Offset of a new region of `nbytes` (page-aligned when large, as onnx does)."""
        offset = self.size
        if nbytes >= 1 << 20 and offset % _ALIGN:
            offset += _ALIGN - offset % _ALIGN
        self.size = offset + nbytes
        return offset

    def write_at(self, offset: int, data: np.ndarray) -> None:
        f = self._f
        f.seek(offset)  # type: ignore[attr-defined]
        f.write(np.ascontiguousarray(data).tobytes())  # type: ignore[attr-defined]

    def tensor(self, name: str, dtype: int, shape: tuple[int, ...], offset: int, nbytes: int):
        """A TensorProto that points into this file (no data held in the proto)."""
        import onnx

        t = onnx.TensorProto(name=name, data_type=dtype, dims=list(shape))
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", self.path.name), ("offset", str(offset)), ("length", str(nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = k, v
        return t

    def finish(self) -> None:
        """Pad the file to its logical size (a reserved tail region may not have been written past)."""
        f = self._f
        f.seek(0, 2)  # type: ignore[attr-defined]
        if f.tell() < self.size:  # type: ignore[attr-defined]
            f.truncate(self.size)  # type: ignore[attr-defined]


def row_blocks(path: Path, key: str, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float32 rows) of one checkpoint tensor, read lazily a block of rows at a time.

    bf16 (how Gemma ships) is widened to float32 here, exactly as from_pretrained(dtype=float32) does."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as st:
        sl = st.get_slice(key)
        shape = sl.get_shape()
        if len(shape) <= 1:
            yield 0, st.get_tensor(key).to(torch.float32).numpy().copy()
            return
        row_bytes = 4 * int(np.prod(shape[1:]))
        step = max(1, block_bytes // row_bytes)
        for start in range(0, shape[0], step):
            yield start, sl[start : start + step].to(torch.float32).numpy().copy()


def tensor_shape(path: Path, key: str) -> tuple[int, ...]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as st:
        return tuple(st.get_slice(key).get_shape())


# ------------------------------------------------------------------------------------------------- graph filling


@dataclass(frozen=True)
class FillStats:
    tensors: int
    matmulnbits: int
    bytes_written: int


def fill_graph(
    skeleton_path: Path,
    names: dict[str, list[str]],
    index: CheckpointIndex,
    quantize: bool,
    block_bytes: int = BLOCK_BYTES,
    plan: BlockPlan | None = None,
    accuracy_level: int = 4,
) -> FillStats:
    """Turn the skeleton's parameter inputs into initializers streamed from the checkpoint; rewrite in place.

    `names` maps each parameter input of the graph to its candidate checkpoint names. With `quantize`, every
    parameter that reaches a MatMul only through Transpose(perm=[1,0]) becomes a MatMulNBits weight (int4, block
    per `plan`, symmetric, `accuracy_level`, the settings of quantize.quantize_int4); everything else is stored
    as float32 unchanged (ONNX Runtime folds the remaining Transposes/Casts when it loads the graph).
    """
    import onnx

    from .quantize import int4_block_quant

    model = onnx.load(str(skeleton_path), load_external_data=False)
    graph = model.graph
    params = [i for i in graph.input if i.name in names]
    located = {p.name: index.locate(names[p.name], p.name, skeleton_path.name) for p in params}  # fail before writing

    consumers: dict[str, list] = {}
    for node in graph.node:
        for x in node.input:
            consumers.setdefault(x, []).append(node)

    def matmul_via_transpose(name: str):
        users = consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != "Transpose":
            return None
        tr = users[0]
        perm = [a.ints for a in tr.attribute if a.name == "perm"]
        if perm and list(perm[0]) != [1, 0]:
            return None
        after = consumers.get(tr.output[0], [])
        if len(after) != 1 or after[0].op_type != "MatMul" or after[0].input[1] != tr.output[0]:
            return None
        return tr, after[0]

    data = skeleton_path.with_name(skeleton_path.name + ".data")
    order = sorted(params, key=lambda p: _layer_of(names[p.name][0]))
    n_layers = 1 + max((_layer_of(names[p.name][0]) for p in params), default=-1)
    done_layer = -2
    t0 = time.monotonic()
    n_nbits = 0
    new_inits = []
    drop_nodes: set[int] = set()
    new_nodes: dict[int, object] = {}
    with DataSink(data) as sink:
        for p in order:
            layer = _layer_of(names[p.name][0])
            if layer != done_layer:
                _progress(skeleton_path.name, layer, n_layers, sink.size, t0)
                done_layer = layer
            path, key = located[p.name]
            shape = tensor_shape(path, key)
            _check_shape(p, shape, key, index.root)
            pattern = matmul_via_transpose(p.name) if quantize and len(shape) == 2 else None
            if pattern is None:
                nbytes = 4 * int(np.prod(shape))
                offset = sink.reserve(nbytes)
                at = offset
                for _, block in row_blocks(path, key, block_bytes):
                    sink.write_at(at, block)
                    at += block.nbytes
                new_inits.append(sink.tensor(p.name, onnx.TensorProto.FLOAT, shape, offset, nbytes))
                continue
            tr, mm = pattern
            n, k = shape  # torch Linear weight [out, in] = MatMulNBits [N, K]
            block_size = (plan or DEFAULT_PLAN).block_for(mm.name)
            k_blocks = (k + block_size - 1) // block_size
            blob = block_size // 2
            q_off = sink.reserve(n * k_blocks * blob)
            s_off = sink.reserve(n * k_blocks * 4)
            for start, rows in row_blocks(path, key, block_bytes):
                packed, scales = int4_block_quant(np.ascontiguousarray(rows.T), block_size, accuracy_level)
                sink.write_at(q_off + start * k_blocks * blob, packed)
                sink.write_at(s_off + start * k_blocks * 4, scales)
                del rows, packed, scales
            q_name, s_name = p.name + "_Q4", p.name + "_scales"
            new_inits.append(sink.tensor(q_name, onnx.TensorProto.UINT8, (n, k_blocks, blob), q_off, n * k_blocks * blob))
            new_inits.append(sink.tensor(s_name, onnx.TensorProto.FLOAT, (n, k_blocks), s_off, n * k_blocks * 4))
            new_nodes[id(mm)] = onnx.helper.make_node(
                "MatMulNBits",
                [mm.input[0], q_name, s_name],
                list(mm.output),
                name=(mm.name or p.name) + "_Q4",
                domain="com.microsoft",
                K=k,
                N=n,
                bits=4,
                block_size=block_size,
                accuracy_level=accuracy_level,
            )
            drop_nodes.add(id(tr))
            n_nbits += 1
        sink.finish()
        total = sink.size
    _progress(skeleton_path.name, n_layers, n_layers, total, t0)

    kept_inputs = [i for i in graph.input if i.name not in names]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    graph.initializer.extend(new_inits)
    nodes = [new_nodes.get(id(nd), nd) for nd in graph.node if id(nd) not in drop_nodes]
    del graph.node[:]
    graph.node.extend(nodes)
    if n_nbits and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    del graph.value_info[:]  # traced shapes of placeholder-fed tensors; onnxruntime infers its own
    onnx.save_model(model, str(skeleton_path))
    return FillStats(len(new_inits), n_nbits, total)


def _layer_of(name: str) -> int:
    """Decoder layer of a tensor name; -1 (before layer 0) for everything outside the layer stack."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else -1


def _progress(graph_file: str, layer: int, n_layers: int, written: int, t0: float) -> None:
    what = "embeddings, norms, heads" if layer < 0 else ("done" if layer >= n_layers else f"layer {layer + 1}/{n_layers}")
    log.info("weights: %s %s ... (%.1f MB written, %.1f s)", graph_file, what, written / 1e6, time.monotonic() - t0)


def _check_shape(param, shape: tuple[int, ...], key: str, root: Path) -> None:
    dims = tuple(d.dim_value for d in param.type.tensor_type.shape.dim)
    if dims and dims != shape:
        raise ValueError(
            f"{root}: tensor {key!r} has shape {list(shape)} but the config builds {param.name!r} as {list(dims)}: "
            "config.json does not describe these weights; use the config.json that came with the checkpoint"
        )


# ------------------------------------------------------------------------------------------------------ embeddings


def write_embeddings(
    index: CheckpointIndex, candidates: list[str], out_dir: Path, int8: bool, block_bytes: int = BLOCK_BYTES
) -> tuple[str, str | None]:
    """embed_tokens -> embed_tokens.npy (float32, or int8 + embed_scales.npy), streamed a block of rows at a time
    into memory-mapped .npy files (same per-row int8 as quantize.int8_rows, so identical bytes)."""
    from .quantize import int8_rows

    path, key = index.locate(candidates, "embed_tokens", "embed_tokens.npy")
    v, h = tensor_shape(path, key)
    table = np.lib.format.open_memmap(out_dir / "embed_tokens.npy", mode="w+", dtype=np.int8 if int8 else np.float32, shape=(v, h))
    scales = np.lib.format.open_memmap(out_dir / "embed_scales.npy", mode="w+", dtype=np.float32, shape=(v,)) if int8 else None
    for start, rows in row_blocks(path, key, block_bytes):
        stop = start + rows.shape[0]
        if scales is not None:
            q, s = int8_rows(rows)
            table[start:stop], scales[start:stop] = q, s
        else:
            table[start:stop] = rows
    table.flush()
    del table
    if scales is not None:
        scales.flush()
        return "embed_tokens.npy", "embed_scales.npy"
    return "embed_tokens.npy", None


# ---------------------------------------------------------------------------------------------------- whole graphs


def export_skeleton(
    module, example: tuple, path: Path, export_kwargs: dict, progress: Callable[[str], None] | None = None
) -> dict[str, int]:
    """torch.onnx.export with every parameter/persistent buffer kept as a named graph input (no weights written).

    Returns {graph input name: id(tensor)} for the module's state dict, to map them back to checkpoint names."""
    import torch

    with torch.no_grad():
        torch.onnx.export(
            module,
            example,
            str(path),
            export_params=False,
            keep_initializers_as_inputs=True,
            do_constant_folding=False,  # folding renames weights (onnx::MatMul_123) and loses the mapping
            dynamo=False,
            **export_kwargs,
        )
    return {name: id(t) for name, t in module.state_dict(keep_vars=True).items()}


def trace_weightless(
    models: Sequence,
    sizes: Sequence[dict[str, int]],
    real_sizes: dict[str, int],
    make: Callable[[object], tuple[object, tuple, dict]],
    path: Path,
    real_shapes: Callable[[list[str]], tuple[int, ...]],
) -> dict[str, list[str]]:
    """Trace `make(model)` for each shrunk placeholder model, check that the graphs differ only in size-carrying
    dims, and write the first one to `path` with the real sizes. Returns {graph input: candidate names}.

    `sizes[i]` are the SIZE_KEYS values `models[i]` was built with, `real_sizes` the checkpoint's; `make` returns
    (module to trace, example inputs, torch.onnx.export keyword arguments); `real_shapes(names)` is the full-size
    shape of the parameter known by `names`. Two traces, not one: a dim or constant equal to a shrunk size in one
    trace could be a coincidence, but one that follows the size across both is not, and anything else that differs
    is a size baked into the graph (a Reshape target, a scale constant) which rewriting the declared dims would
    not fix: SizeBakedIn, before any weight is read.
    """
    import onnx

    if len(models) != 2 or len(sizes) != 2:
        raise ValueError("trace_weightless needs exactly two placeholder models built at two different size sets")
    by_pair: dict[tuple[int, int], int] = {}
    for key, real in real_sizes.items():
        pair = (sizes[0][key], sizes[1][key])
        if pair[0] == pair[1] or pair in by_pair:
            raise ValueError(f"trace sizes {list(sizes)} must give every size key its own pair of distinct values")
        by_pair[pair] = real
    graphs, mappings = [], []
    for i, model in enumerate(models):
        module, example, kwargs = make(model)
        trace_path = path.with_name(f"{path.stem}.trace{i}{path.suffix}")
        ids = export_skeleton(module, example, trace_path, kwargs)
        names = source_names(model)
        mappings.append({g: names[t] for g, t in ids.items()})
        graphs.append(onnx.load(str(trace_path), load_external_data=False))
        trace_path.unlink()
        del module, example
    if mappings[0] != mappings[1]:
        raise SizeBakedIn(f"{path.name}: the two weightless traces have different parameter inputs; report the model")
    first, second = graphs
    _same_nodes(first.graph, second.graph, path.name)
    params = mappings[0]
    for kind in ("input", "output"):
        a_list, b_list = getattr(first.graph, kind), getattr(second.graph, kind)
        if [v.name for v in a_list] != [v.name for v in b_list]:
            raise SizeBakedIn(f"{path.name}: the two weightless traces have different graph {kind}s; report the model")
        for a, b in zip(a_list, b_list):
            if a.name in params:
                _set_dims(a, real_shapes(params[a.name]))
            else:
                _set_dims(a, _real_dims(a, b, by_pair, path.name))
    del first.graph.value_info[:]  # shapes of intermediate tensors at the shrunk sizes; onnxruntime infers its own
    onnx.save_model(first, str(path))
    return params


def _same_nodes(a, b, graph_file: str) -> None:
    """Every node (op, inputs, outputs, attributes, constant values) and initializer identical in both traces."""
    if len(a.node) != len(b.node) or list(a.initializer) != list(b.initializer):
        raise SizeBakedIn(
            f"{graph_file}: tracing at two shrunk sizes gave {len(a.node)} vs {len(b.node)} nodes: the model's code "
            f"branches on one of {SIZE_KEYS}; export with export_bundle(streamed=False) on a machine with RAM for "
            "the fp32 model, or teach model_export/stream_export.py that size"
        )
    for x, y in zip(a.node, b.node):
        if x != y:
            raise SizeBakedIn(
                f"{graph_file}: node {x.name or x.op_type!r} ({x.op_type}) differs between traces at two shrunk sizes: "
                f"one of {SIZE_KEYS} is baked into an attribute or a constant, which the weightless trace cannot "
                "restore; export with export_bundle(streamed=False) on a machine with RAM for the fp32 model, or "
                "teach model_export/stream_export.py that size"
            )


def _dims(v) -> list:
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]


def _real_dims(a, b, by_pair: dict[tuple[int, int], int], graph_file: str) -> list:
    """Declared dims of a graph input/output: kept where both traces agree, the real size where they follow one."""
    da, db = _dims(a), _dims(b)
    if len(da) != len(db):
        raise SizeBakedIn(f"{graph_file}: {a.name!r} has rank {len(da)} vs {len(db)} in the two traces; report the model")
    out = []
    for x, y in zip(da, db):
        if x == y:
            out.append(x)
        elif isinstance(x, int) and isinstance(y, int) and (x, y) in by_pair:
            out.append(by_pair[(x, y)])
        else:
            raise SizeBakedIn(
                f"{graph_file}: dim of {a.name!r} is {x} vs {y} in traces at two shrunk sizes, which is none of "
                f"{SIZE_KEYS}; export with export_bundle(streamed=False) or teach model_export/stream_export.py that size"
            )
    return out


def _set_dims(v, dims: Sequence) -> None:
    shape = v.type.tensor_type.shape
    if len(shape.dim) != len(dims):
        raise SizeBakedIn(f"{v.name!r}: traced with rank {len(shape.dim)} but the checkpoint's tensor has rank {len(dims)}")
    for d, real in zip(shape.dim, dims):
        if isinstance(real, str):
            d.dim_param = real
        else:
            d.dim_value = int(real)
