"""Build the bundled demo checkpoint: a tiny Qwen2-MoE with a byte-level BPE tokenizer and ChatML template.

Run from the repository root: `python scripts/train_demo_model.py` (about 15 minutes on 2 CPU cores).
It trains on every prompt alone, after any other exchange, and at the end of random conversations of up to
7 exchanges, until greedy decoding reproduces every answer in `demo_dialogues.json` in all of those cases
(40 long conversations held out), then writes `model_loader/checkpoints/demo-moe/`.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2MoeConfig, Qwen2MoeForCausalLM

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "demo_dialogues.json"
OUT = ROOT / "model_loader" / "checkpoints" / "demo-moe"

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen1.5's own ChatML template, so the demo exercises the same prompt path as the real model.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def load_pairs() -> list[tuple[str, str]]:
    data = json.loads(DATA.read_text())
    pairs = [(d["prompt"], d["answer"]) for d in data["dialogues"]]
    pairs += [(p, data["fallback"]["answer"]) for p in data["fallback"]["prompts"]]
    return pairs


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=2048,
    )
    fast.chat_template = CHATML
    return fast


def turn(q: str, a: str) -> list[dict]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def conversations(pairs: list[tuple[str, str]]) -> list[list[dict]]:
    """Every single turn, and every ordered two-turn mix, so follow-up questions work too."""
    convs = [turn(q, a) for q, a in pairs]
    convs += [turn(q1, a1) + turn(q2, a2) for (q1, a1) in pairs for (q2, a2) in pairs if q1 != q2]
    return convs


def long_conversations(pairs: list[tuple[str, str]], count: int, rng: random.Random) -> list[list[dict]]:
    """Conversations of 3 to 7 exchanges in any order (repeats too): the answer depends on the last question only."""
    return [[m for q, a in rng.choices(pairs, k=rng.randint(3, 7)) for m in turn(q, a)] for _ in range(count)]


def encode(tok: PreTrainedTokenizerFast, conv: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids and labels; only assistant replies (and their <|im_end|>) are learned."""
    text = tok.apply_chat_template(conv, tokenize=False)
    spans = []
    for i, msg in enumerate(conv):
        if msg["role"] == "assistant":
            start = len(tok.apply_chat_template(conv[:i], tokenize=False, add_generation_prompt=True))
            spans.append((start, start + len(msg["content"]) + len("<|im_end|>")))
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    labels = [t if any(s <= off[0] < e for s, e in spans) else -100
              for t, off in zip(ids, enc["offset_mapping"], strict=True)]
    return ids, labels


def greedy(model, tok, history: list[tuple[str, str]], prompt: str, max_new_tokens: int = 120) -> str:
    messages = [m for q, a in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    messages.append({"role": "user", "content": prompt})
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def wrong_answers(model, tok, pairs: list[tuple[str, str]], long: list[list[dict]]) -> list[str]:
    """Prompts answered wrongly: alone, after any other known exchange, and at the end of long conversations."""
    cases = [([], q, a) for q, a in pairs] + [([p1], q, a) for p1 in pairs for q, a in pairs if p1[0] != q]
    cases += [([(c[i]["content"], c[i + 1]["content"]) for i in range(0, len(c) - 2, 2)], c[-2]["content"],
               c[-1]["content"]) for c in long]
    return [" / ".join([h[0] for h in hist] + [q]) for hist, q, a in cases if greedy(model, tok, hist, q) != a]


def batch(tok: PreTrainedTokenizerFast, convs: list[list[dict]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = [encode(tok, c) for c in convs]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, lab) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        labels[r, : len(lab)] = torch.tensor(lab)
        mask[r, : len(ids)] = 1
    return input_ids, labels, mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    pairs = load_pairs()
    tok = build_tokenizer([f"{q}\n{a}" for q, a in pairs] + ["system\nYou are a helpful assistant.\nuser\nassistant\n"],
                          vocab_size=640)
    config = Qwen2MoeConfig(
        vocab_size=len(tok), hidden_size=96, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, moe_intermediate_size=96,
        shared_expert_intermediate_size=192, num_experts=8, num_experts_per_tok=2,
        max_position_embeddings=2048, tie_word_embeddings=False,
        bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = Qwen2MoeForCausalLM(config)
    fixed = conversations(pairs)
    rng = random.Random(args.seed)
    held_out = long_conversations(pairs, 40, random.Random(args.seed + 1))  # checked, never trained on

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps)
    model.train()
    for step in range(1, args.steps + 1):
        input_ids, labels, mask = batch(tok, fixed + long_conversations(pairs, 48, rng))
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            model.eval()
            wrong = wrong_answers(model, tok, pairs, held_out)
            model.train()
            print(f"step {step}: loss {loss.item():.4f}, wrong answers {len(wrong)}", flush=True)
            if not wrong and loss.item() < 0.01:
                break
    model.eval()
    wrong = wrong_answers(model, tok, pairs, held_out)
    if wrong:
        raise SystemExit(f"training did not converge; wrong answers for {wrong}: raise --steps")

    model.generation_config = GenerationConfig(
        do_sample=False, max_new_tokens=256, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.pad_token_id,
    )
    if args.out.exists():
        shutil.rmtree(args.out)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB, {sum(p.numel() for p in model.parameters()):,} parameters)")


if __name__ == "__main__":
    main()
