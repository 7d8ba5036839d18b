"""The stored form of an answer's routing: exact round trip, its size for a long Qwen answer, the cap, and refusals
of damaged imports."""

from __future__ import annotations

import json
import random

from common.routing import MAX_TOKENS, Routing, entropy_bits


def qwen_like(tokens: int, seed: int = 0) -> Routing:
    rng = random.Random(seed)
    experts = [[rng.sample(range(60), 4) for _ in range(24)] for _ in range(tokens)]
    weights = [[[rng.random() for _ in range(4)] for _ in range(24)] for _ in range(tokens)]
    return Routing.pack(experts, weights, [f"t{i}" for i in range(tokens)], min(100, tokens), 60,
                        "1 shared expert, gated")


def test_a_round_trip_keeps_every_expert_and_each_weight_within_half_a_step():
    routing = qwen_like(50)
    again = Routing.from_dict(json.loads(json.dumps(routing.to_dict())))
    assert again == routing
    rng = random.Random(0)
    first = rng.sample(range(60), 4)
    assert [again.expert(0, 0, j) for j in range(4)] == first
    assert all(0 <= again.weight(t, 3, 2) <= 1 for t in range(50))


def test_a_thousand_token_qwen_answer_stays_small_and_the_cap_keeps_the_last_tokens():
    routing = qwen_like(1100)  # 100 prompt + 1,000 answer tokens, 24 layers x 4 experts
    size = len(json.dumps(routing.to_dict()))
    assert 250_000 < size < 300_000, size
    capped = qwen_like(MAX_TOKENS + 10)
    assert capped.rows == MAX_TOKENS and capped.prompt_tokens == 90 and capped.tokens[0] == "t10"
    big = Routing.pack([[[300, 1]]], [[[1.0, 0.0]]], ["x"], 0, 512)  # over 256 experts: two bytes each
    assert big.width == 2 and big.expert(0, 0, 0) == 300


def test_damaged_routing_is_refused_with_the_reason():
    good = qwen_like(3).to_dict()
    assert Routing.problems(good) == []
    assert Routing.problems({**good, "layers": 23}) == ["routing sizes do not match its tokens, layers and top_k"]
    assert Routing.problems({**good, "experts": "not base64!"}) == ["routing experts and weights must be base64"]
    assert Routing.problems({**good, "extra": 1}) == ["unknown routing key 'extra'"]
    assert Routing.from_dict({**good, "prompt_tokens": 9}) is None


def test_entropy_is_in_bits():
    assert entropy_bits([5, 5, 5, 5]) == 2.0 and entropy_bits([9, 0, 0]) == 0.0 and entropy_bits([]) == 0.0
