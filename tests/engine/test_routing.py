"""Recorded routing is the routing: the experts and weights the hooks saw while `generate` streamed (with its KV
cache) equal the routers' top-k over one full forward pass of the final sequence, for every token and layer, on the
demo and on tiny Qwen2-MoE and XVERSE checkpoints in their real layouts. Off, no hook is installed."""

from __future__ import annotations

import pytest
import torch

from chat_engine.engine import Engine
from chat_engine.params import GenerationParams
from chat_engine.prompt import encode_prompt
from chat_engine.transformers_backend.routing import RoutingRecorder, find_routers
from common.settings import Settings
from model_loader.registry import ModelSpec, load_registry
from tests.support.helpers import KNOWN_ANSWERS, QWEN_CHATML, build_random_qwen2_moe
from tests.support.xverse_checkpoint import build_tiny_xverse

ASK = [{"role": "user", "content": "Who are you?"}]


@pytest.fixture(scope="module", params=["demo", "qwen2-moe", "xverse"])
def engine(request, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"routing-{request.param}")
    if request.param == "demo":
        spec = load_registry().get("demo-moe")
    elif request.param == "qwen2-moe":
        spec = ModelSpec(id="tiny-qwen", name="tiny Qwen2-MoE", source="local",
                         path=build_random_qwen2_moe(home / "qwen"), chat_template=QWEN_CHATML)
    else:
        spec = ModelSpec(id="tiny-xverse", name="tiny XVERSE", source="local", path=build_tiny_xverse(home / "x"),
                         chat_template="{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}"
                                       "{% endfor %}assistant: ")
    engine = Engine(Settings(cache_dir=home, device="cpu"))
    engine.load(spec)
    yield engine
    engine.close()


def hooks(model) -> int:
    return sum(len(router._forward_hooks) for router in find_routers(model))


def test_recorded_routing_equals_the_routers_top_k_over_the_final_sequence(engine):
    loaded = engine.backend.loaded
    model, tokenizer = loaded.model, loaded.tokenizer
    reply = engine.chat(ASK, GenerationParams(max_new_tokens=24, ignore_eos=True), routing=True)
    reply.text()
    trace, generated = reply.generation.routing_trace, reply.generation.ids
    prompt = encode_prompt(tokenizer, reply.budget.messages, device="cpu")["input_ids"]
    assert trace.prompt_tokens == prompt.shape[1] and len(generated) == 24
    assert trace.experts.shape == (prompt.shape[1] + 23, len(find_routers(model)), trace.top_k)  # last not fed back
    full = torch.cat([prompt, torch.tensor([generated[:-1]])], dim=1)
    recomputed = RoutingRecorder(model, full.shape[1])
    try:
        with torch.inference_mode():
            model(input_ids=full)
    finally:
        recomputed.close()
    expected = recomputed.trace(prompt.shape[1])
    got_ids = trace.experts.sort(dim=-1)
    want_ids = expected.experts.sort(dim=-1)
    assert torch.equal(got_ids.values, want_ids.values), "a token was routed to other experts than the full pass says"
    got_weights = torch.gather(trace.weights, -1, got_ids.indices.long())
    want_weights = torch.gather(expected.weights, -1, want_ids.indices.long())
    assert torch.allclose(got_weights, want_weights, atol=1e-4)
    assert hooks(model) == 0  # the hooks went with the generation


def test_with_recording_off_no_hook_is_installed_and_nothing_is_kept(engine):
    model = engine.backend.loaded.model
    seen = []
    routers = find_routers(model)
    original = [router.register_forward_hook(lambda *a: seen.append(len(routers[0]._forward_hooks)))
                for router in routers[:1]]
    try:
        reply = engine.chat(ASK, GenerationParams(max_new_tokens=4, ignore_eos=True))
        reply.text()
    finally:
        for handle in original:
            handle.remove()
    assert reply.routing is None and reply.generation.routing_trace is None
    assert seen and set(seen) == {1}  # only the test's own hook ever ran


def test_a_second_generation_on_another_thread_is_not_recorded(tmp_path):
    engine = Engine(Settings(cache_dir=tmp_path, device="cpu", concurrency=2))
    engine.load(load_registry().get("demo-moe"))
    try:
        recorded = engine.chat(ASK, GenerationParams(max_new_tokens=40, ignore_eos=True), routing=True)
        other = engine.chat([{"role": "user", "content": "Hello"}], GenerationParams(max_new_tokens=40,
                                                                                      ignore_eos=True))
        recorded.text(), other.text()
        prompt = encode_prompt(engine.backend.loaded.tokenizer, recorded.budget.messages, device="cpu")["input_ids"]
        assert recorded.generation.routing_trace.experts.shape[0] == prompt.shape[1] + 39 and other.routing is None
    finally:
        engine.close()


def test_the_demo_routing_has_its_shape(tmp_path):
    engine = Engine(Settings(cache_dir=tmp_path, device="cpu"))
    engine.load(load_registry().get("demo-moe"))
    reply = engine.chat(ASK, GenerationParams(max_new_tokens=8), routing=True)
    reply.text()
    engine.close()
    trace, routing = reply.generation.routing_trace, reply.routing
    assert (trace.layers, trace.top_k, trace.num_experts) == (2, 2, 8)
    assert (routing.layers, routing.top_k, routing.num_experts, routing.rows) == (2, 2, 8, trace.experts.shape[0])
    assert routing.prompt_tokens == trace.prompt_tokens and "gated" in routing.shared
    assert [routing.expert(5, 1, j) for j in range(2)] == trace.experts[5, 1].tolist()
    assert abs(routing.weight(5, 1, 0) - float(trace.weights[5, 1, 0])) <= 1 / 510
    assert "".join(routing.tokens[routing.prompt_tokens:]) == KNOWN_ANSWERS["Who are you?"][:len(
        "".join(routing.tokens[routing.prompt_tokens:]))]

