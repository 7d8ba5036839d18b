"""Where from_pretrained(device_map="auto") puts each module: transformers 5.23's algorithm, replayed on the facts."""

# Mirrors transformers.integrations.accelerate: `_get_device_map` -> `get_balanced_memory` -> the bitsandbytes
# quantizers' `adjust_max_memory` (x 0.9) -> `infer_auto_device_map` -> accelerate's `clean_device_map`. Not mirrored:
# splitting a tied module that does not fit with its partner, and `_no_placement_params` (no supported model has
# either). tests/unit/test_planner.py checks the result against transformers' own function.

from __future__ import annotations

from collections.abc import Mapping, Sequence

from common.settings import Settings
from model_loader.devices import DeviceFacts, Gpu
from model_loader.placement import LoadOptions, plan_placement
from planner.facts import ModelFacts, ModuleInfo, TensorInfo, walk
from planner.sizes import QUANT_BYTES, module_sizes


def loader_max_memory(gpu_bytes: Sequence[int]) -> dict[int | str, int]:
    """The loader's max_memory for GPUs of these sizes (placement.plan_placement's caps), in bytes."""
    devices = DeviceFacts(gpus=tuple(Gpu(i, f"GPU {i}", (8, 0), int(b)) for i, b in enumerate(gpu_bytes)))
    caps = plan_placement(devices, Settings(device="auto"), LoadOptions()).max_memory or {}
    return {k: _size_to_int(v) for k, v in caps.items()}


_UNITS = {"GIB": 2**30, "MIB": 2**20, "KIB": 2**10, "GB": 10**9, "MB": 10**6, "KB": 10**3}


def _size_to_int(size: int | str) -> int:
    """accelerate's convert_file_size_to_int, for the units the loader writes."""
    if isinstance(size, int):
        return size
    unit = next(u for u in _UNITS if size.upper().endswith(u))
    return int(float(size[: -len(unit)]) * _UNITS[unit])


def simulate_device_map(facts: ModelFacts, dtype: str, max_memory: Mapping[int | str, int]) -> dict[str, int | str]:
    """The device_map from_pretrained(device_map="auto", max_memory=...) computes for this model and dtype."""
    sizes, leaves = module_sizes(facts, dtype, resident=False)
    gpus = sorted(k for k in max_memory if isinstance(k, int))
    memory: dict[int | str, float] = {k: max_memory[k] for k in [*gpus, "cpu", "disk"] if k in max_memory}
    live = [k for k in gpus if memory[k] > 0]
    if live:  # get_balanced_memory: every GPU but the last gets an even share plus 1.25 x the biggest block
        biggest = max((sizes.get(m.name, 0) for m in walk(facts.root) if m.cls in facts.no_split), default=0)
        per_gpu = sizes.get("", 0) // len(live) + int(1.25 * max(biggest, max(leaves.values(), default=0)))
        for k in live[:-1]:
            memory[k] = min(per_gpu, memory[k])
    if dtype in QUANT_BYTES:
        memory = {k: v * 0.90 for k, v in memory.items()}
    return _clean(_infer(facts, sizes, memory), "")


def _entries(module: ModuleInfo, buffers: bool) -> list[tuple[str, ModuleInfo | TensorInfo]]:
    items: list[ModuleInfo | TensorInfo] = [*module.params, *module.children, *(module.buffers if buffers else ())]
    return [(i.name, i) for i in items]


def _max_layer(entries: list, sizes: dict[str, float], no_split: tuple[str, ...]) -> tuple[float, list[str]]:
    best: float = 0
    names: list[str] = []
    todo = list(entries)
    while todo:
        name, item = todo.pop(0)
        children = item.children if isinstance(item, ModuleInfo) else ()
        if not children or item.cls in no_split:
            size = sizes.get(name, 0)
            if size > best:
                best, names = size, [name]
            elif size == best:
                names.append(name)
        else:
            todo = [(c.name, c) for c in children] + todo
    return best, names


def _infer(facts: ModelFacts, sizes: dict[str, float], memory: dict[int | str, float]) -> dict[str, int | str]:
    devices = [*memory, *([] if "disk" in memory else ["disk"])]
    gpus = [d for d in devices if d not in ("cpu", "disk")]
    main = [gpus[0], "cpu"] if gpus else ["cpu"]  # these keep room for the largest remaining layer
    treat = _entries(facts.root, buffers=True)
    device_map: dict[str, int | str] = {}
    used = dict.fromkeys(devices, 0.0)
    current = 0

    def modules() -> list:
        return [e for e in treat if isinstance(e[1], ModuleInfo)]

    max_layer, max_names = _max_layer(treat, sizes, facts.no_split)
    while treat:
        name, item = treat.pop(0)
        max_names = [n for n in max_names if n != name and not n.startswith(name + ".")]
        if not max_names:
            max_layer, max_names = _max_layer(modules(), sizes, facts.no_split)
        split_ties = [g for g in facts.tied if {name + "." in k + "." for k in g} == {True, False}]
        partners = [p for g in split_ties for p in g if name + "." not in p + "."]
        device = devices[current]
        cap = None if device == "disk" else memory[device]
        reserved: float = 0
        if device in main and cap is not None:
            cap, reserved = cap - max_layer, max_layer
        size, owners = sizes.get(name, 0), []
        for p in partners:
            owner = next((n for n, _ in treat if p.startswith(n + ".")), None)
            if owner is not None and owner not in owners:
                owners.append(owner)
                size += sizes.get(owner, 0)
        if cap is None or used[device] + size <= cap:
            used[device] += size
            device_map[name] = device
            for owner in owners:
                treat = [e for e in treat if e[0] != owner]
                device_map[owner] = device
            continue
        if isinstance(item, ModuleInfo) and item.children and item.cls not in facts.no_split:
            treat = _entries(item, buffers=False) + treat  # split it and place its parts
            max_layer, max_names = _max_layer(modules(), sizes, facts.no_split)
            continue
        used[device] += reserved  # cannot split: the next device
        current += 1
        treat.insert(0, (name, item))
    return device_map


def _clean(device_map: dict[str, int | str], module_name: str) -> dict[str, int | str]:
    """accelerate's clean_device_map: parts of a module that all went to one device become the module."""
    prefix = f"{module_name}." if module_name else ""
    values = [v for k, v in device_map.items() if k.startswith(prefix)]
    if len(set(values)) == 1 and len(values) > 1:
        for k in [k for k in device_map if k.startswith(prefix)]:
            del device_map[k]
        device_map[module_name] = values[0]
    depth = len(module_name.split(".")) + 1 if module_name else 1
    below = [k for k in device_map if k.startswith(prefix) and len(k) > len(module_name)]
    for child in {".".join(k.split(".")[:depth]) for k in below}:
        _clean(device_map, child)
    return device_map

