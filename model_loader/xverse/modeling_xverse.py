"""XVERSE-MoE on transformers v5 building blocks: a Llama decoder whose MLP is a mixture of fused experts."""

# Keep the experts, the attention and the model classes in this one module: transformers decides whether a model
# supports `experts_implementation` / `attn_implementation` by reading the source of the model's own module. The
# original per-expert checkpoint tensors are merged into the fused ones by the conversion mapping in `__init__.py`.

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.integrations import use_experts_implementation
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MoeCausalLMOutputWithPast, MoeModelOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from model_loader.xverse.configuration_xverse import XverseConfig

# transformers 5.24 renamed the KV cache `past_key_values` -> `cache` (argument, output field and mask helper) and
# deprecates the old name; 5.23 knows only the old one. Follow whichever the installed version speaks.
CACHE_FIELD = "cache" if "cache" in {f.name for f in dataclasses.fields(MoeModelOutputWithPast)} else "past_key_values"
_MASK_CACHE_ARG = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"
ROUTING_EPS = 1e-6  # added to the top-k sum before renormalising, as the original remote code does


def _one_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The KV cache under whichever name the caller used (5.24's `generate` passes `cache`, 5.23's the old name)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("Pass the KV cache once: `cache` or `past_key_values`, not both.")
    return cache if cache is not None else past_key_values


class XverseRMSNorm(nn.Module):
    """RMSNorm computed in float32, the weight applied after casting back (as the original does)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # [..., hidden]
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)  # [..., 1]
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class XverseRotaryEmbedding(nn.Module):
    """cos/sin tables for rotate-half RoPE; rope_type other than "default" comes from v5's ROPE_INIT_FUNCTIONS."""

    inv_freq: torch.Tensor

    def __init__(self, config: XverseConfig) -> None:
        super().__init__()
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        rope_init_fn: Callable = self.compute_default_rope_parameters
        if self.rope_type != "default":
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(config)
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)  # [head_dim / 2]
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: XverseConfig, **kwargs) -> tuple[torch.Tensor, float]:
        """Inverse frequencies base ** (-2i / head_dim), and the unused attention scaling 1.0."""
        base = config.rope_parameters["rope_theta"]
        dim = config.hidden_size // config.num_attention_heads
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        return inv_freq, 1.0

    @torch.no_grad()
    @dynamic_rope_update  # "dynamic" rope_scaling grows the table past the trained length
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)  # [b, s, d/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [batch, seq, head_dim]
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                         sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k ([batch, heads, seq, head_dim]) by the position tables ([batch, seq, head_dim])."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [batch, 1, seq, head_dim]
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[batch, kv_heads, seq, head_dim] -> [batch, kv_heads * n_rep, seq, head_dim]."""
    batch, kv_heads, seq, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, kv_heads, n_rep, seq, head_dim)
    return hidden_states.reshape(batch, kv_heads * n_rep, seq, head_dim)


def eager_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                            **kwargs: Unpack[TransformersKwargs]) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention in plain torch; the fallback of v5's attention interface."""
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling  # [batch, heads, q_len, kv_len]
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)  # [batch, heads, q_len, head_dim]
    return attn_output.transpose(1, 2).contiguous(), attn_weights  # [batch, q_len, heads, head_dim]


class XverseAttention(nn.Module):
    """Multi-head causal self-attention with RoPE, dispatched through v5's ALL_ATTENTION_FUNCTIONS."""

    def __init__(self, config: XverseConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        q_out, kv_out = config.num_attention_heads * self.head_dim, config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_out, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_out, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_out, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_out, config.hidden_size, bias=config.attention_bias)

    def forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                attention_mask: torch.Tensor | None = None, cache: Cache | None = None,
                **kwargs: Unpack[TransformersKwargs]) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]  # [batch, seq]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # [batch, heads, seq, d]
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # [batch, kv_heads, seq, d]
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self, query_states, key_states, value_states, attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout, scaling=self.scaling, **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()  # [batch, seq, hidden]
        return self.o_proj(attn_output), attn_weights


class XverseMLP(nn.Module):
    """A gated MLP down(act(gate(x)) * up(x)); the shared experts are one of these."""

    def __init__(self, config: XverseConfig, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [tokens, hidden]
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


@use_experts_implementation
class XverseExperts(nn.Module):
    """The routed experts as fused 3-D tensors; this forward is the "eager" path, a loop over the experts hit."""

    def __init__(self, config: XverseConfig) -> None:
        super().__init__()
        self.num_experts = config.num_experts
        self.hidden_dim = config.hidden_size
        self.intermediate_dim = config.intermediate_size
        # [experts, 2 * intermediate, hidden]: each expert's gate_proj rows, then its up_proj rows
        self.gate_up_proj = nn.Parameter(torch.empty(self.num_experts, 2 * self.intermediate_dim, self.hidden_dim))
        # [experts, hidden, intermediate]
        self.down_proj = nn.Parameter(torch.empty(self.num_experts, self.hidden_dim, self.intermediate_dim))
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        """sum_k weight_k * expert_k(x) per token: [tokens, hidden], [tokens, k], [tokens, k] -> [tokens, hidden]."""
        final_hidden_states = torch.zeros_like(hidden_states)
        with torch.no_grad():
            expert_mask = F.one_hot(top_k_index, num_classes=self.num_experts).permute(2, 1, 0)  # [experts, k, tokens]
            expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()  # [experts hit, 1]
        for expert_idx in expert_hit:
            expert_idx = expert_idx[0]
            top_k_pos, token_idx = torch.where(expert_mask[expert_idx])  # [pairs], [pairs]
            current_state = hidden_states[token_idx]  # [pairs, hidden]
            gate, up = F.linear(current_state, self.gate_up_proj[expert_idx]).chunk(2, dim=-1)  # [pairs, inter]
            current = F.linear(self.act_fn(gate) * up, self.down_proj[expert_idx])  # [pairs, hidden]
            current = current * top_k_weights[token_idx, top_k_pos, None]
            final_hidden_states.index_add_(0, token_idx, current.to(final_hidden_states.dtype))
        return final_hidden_states


class XverseRouter(nn.Module):
    """Softmax-then-top-k routing, in float32 as the original (its router weight is stored in float32)."""

    def __init__(self, config: XverseConfig) -> None:
        super().__init__()
        self.top_k = config.moe_top_k
        self.num_experts = config.num_experts
        self.norm_topk_prob = config.norm_topk_prob
        self.weight = nn.Parameter(torch.zeros(self.num_experts, config.hidden_size))  # [experts, hidden]

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[tokens, hidden] -> router logits [tokens, experts] (float32), top-k weights and indices [tokens, k]."""
        router_logits = F.linear(hidden_states.float(), self.weight.float())  # [tokens, experts]
        routing_probs = F.softmax(router_logits, dim=-1, dtype=torch.float32)
        top_k_weights, top_k_index = torch.topk(routing_probs, self.top_k, dim=-1)  # [tokens, k]
        if self.norm_topk_prob:  # on unless config.json says otherwise: see XverseConfig.norm_topk_prob
            top_k_weights = top_k_weights / (top_k_weights.sum(dim=-1, keepdim=True) + ROUTING_EPS)
        return router_logits, top_k_weights, top_k_index


class XverseSparseMoeBlock(nn.Module):
    """Routed experts plus shared experts; unlike Qwen2-MoE the shared output is added with no gate."""

    def __init__(self, config: XverseConfig) -> None:
        super().__init__()
        self.router = XverseRouter(config)
        self.experts = XverseExperts(config)
        self.shared_experts = XverseMLP(config, config.num_shared_experts * config.intermediate_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # [batch, seq, hidden]
        batch, seq, hidden = hidden_states.shape
        flat = hidden_states.reshape(-1, hidden)  # [tokens, hidden]
        _, top_k_weights, top_k_index = self.router(flat)
        routed = self.experts(flat, top_k_index, top_k_weights.to(flat.dtype))  # [tokens, hidden]
        return (routed + self.shared_experts(flat)).reshape(batch, seq, hidden)


class XverseDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm residual block: attention, then the mixture of experts."""

    def __init__(self, config: XverseConfig, layer_idx: int) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = XverseAttention(config, layer_idx)
        self.mlp = XverseSparseMoeBlock(config)
        self.input_layernorm = XverseRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = XverseRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: Cache | None = None,
                use_cache: bool | None = False, position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:  # [batch, seq, hidden]
        residual = hidden_states
        hidden_states, _ = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states), attention_mask=attention_mask,
            position_ids=position_ids, cache=cache, use_cache=use_cache,
            position_embeddings=position_embeddings, **kwargs,
        )
        hidden_states = residual + hidden_states
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class XversePreTrainedModel(PreTrainedModel):
    """What every XVERSE model class shares: config class, supported kernels, weight init."""

    config: XverseConfig
    config_class = XverseConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["XverseDecoderLayer"]  # device_map="auto" keeps a layer on one device
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _keep_in_fp32_modules_strict = ["router"]  # the original keeps the router weight in float32 under bf16
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = False  # the eager experts loop is data dependent
    _supports_attention_backend = True
    _can_record_outputs = {
        "router_logits": OutputRecorder(XverseRouter, index=0),
        "hidden_states": XverseDecoderLayer,
        "attentions": XverseAttention,
    }

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, XverseExperts):
            init.normal_(module.gate_up_proj, mean=0.0, std=std)
            init.normal_(module.down_proj, mean=0.0, std=std)
        elif isinstance(module, XverseRouter):
            init.normal_(module.weight, mean=0.0, std=std)


class XverseModel(XversePreTrainedModel):
    """The decoder stack: embeddings, layers, final norm (no head)."""

    def __init__(self, config: XverseConfig) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([XverseDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = XverseRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = XverseRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: Cache | None = None,
                inputs_embeds: torch.FloatTensor | None = None, use_cache: bool | None = None,
                past_key_values: Cache | None = None,
                **kwargs: Unpack[TransformersKwargs]) -> MoeModelOutputWithPast:
        """Hidden states [batch, seq, hidden] of the last layer; router logits when output_router_logits=True."""
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        cache = _one_cache(cache, past_key_values)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # [batch, seq, hidden]
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen_tokens = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)  # [1, seq]
        causal_mask = create_causal_mask(
            config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
            position_ids=position_ids, **{_MASK_CACHE_ARG: cache},
        )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = decoder_layer(
                hidden_states, attention_mask=causal_mask, position_ids=position_ids,
                cache=cache, use_cache=use_cache, position_embeddings=position_embeddings, **kwargs,
            )
        return MoeModelOutputWithPast(last_hidden_state=self.norm(hidden_states),
                                      **{CACHE_FIELD: cache if use_cache else None})


class XverseForCausalLM(XversePreTrainedModel, GenerationMixin):
    """XVERSE-MoE with its (untied) language-model head, ready for `generate`."""

    # v5 form; tying happens only if a config sets tie_word_embeddings (the real one does not)
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: XverseConfig) -> None:
        super().__init__(config)
        self.model = XverseModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: Cache | None = None,
                inputs_embeds: torch.FloatTensor | None = None, labels: torch.LongTensor | None = None,
                use_cache: bool | None = None, output_router_logits: bool | None = None,
                logits_to_keep: int | torch.Tensor = 0, past_key_values: Cache | None = None,
                **kwargs: Unpack[TransformersKwargs]) -> MoeCausalLMOutputWithPast:
        """Logits [batch, seq, vocab]; router logits per layer ([tokens, experts]) when output_router_logits=True.

        No auxiliary load-balancing loss: this implementation serves inference.
        """
        if output_router_logits is None:
            output_router_logits = self.config.output_router_logits
        outputs: MoeModelOutputWithPast = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            cache=_one_cache(cache, past_key_values), inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_router_logits=output_router_logits, **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)  # [batch, kept, vocab]
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.vocab_size, **kwargs)
        return MoeCausalLMOutputWithPast(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions,
            router_logits=outputs.router_logits, **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )


__all__ = ["XverseForCausalLM", "XverseModel", "XversePreTrainedModel"]
