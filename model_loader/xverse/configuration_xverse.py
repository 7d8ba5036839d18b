"""`XverseConfig`: the hyper-parameters of XVERSE-MoE, in the transformers v5 dataclass style."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters


@strict
class XverseConfig(PreTrainedConfig):
    """Configuration of an XVERSE-MoE model; the defaults are those of XVERSE-MoE-A4.2B."""

    model_type = "xverse"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    # The real config.json gives `rope_theta: 500000` at the top level; v5 moves it into `rope_parameters`.
    default_theta = 500000.0
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.experts.gate_up_proj": "packed_colwise",
        "layers.*.mlp.experts.down_proj": "rowwise",
        "layers.*.mlp.experts": "moe_tp_experts",
        "layers.*.mlp.shared_experts.gate_proj": "colwise",
        "layers.*.mlp.shared_experts.up_proj": "colwise",
        "layers.*.mlp.shared_experts.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = 100534
    hidden_size: int = 2560
    intermediate_size: int = 1728  # of ONE routed expert
    num_hidden_layers: int = 28
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: one KV head per attention head, as the real model has
    hidden_act: str = "silu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    tie_word_embeddings: bool = False
    rope_parameters: RopeParameters | dict | None = None
    attention_bias: bool = False
    attention_dropout: float | int = 0.0
    num_experts: int = 64
    moe_top_k: int = 6
    num_shared_experts: int = 2  # one shared MLP of num_shared_experts * intermediate_size
    # Whether the top-k routing probabilities are rescaled to sum to 1 (p / (sum + 1e-6)). The model's own remote code
    # does so unconditionally and never reads this key (the published config.json has none), and it agrees with this
    # port to ~1e-6 only with renormalisation on; so on by default, and `"norm_topk_prob": false` turns it off.
    norm_topk_prob: bool = True
    output_router_logits: bool = False
    router_aux_loss_coef: float = 0.01
    pad_token_id: int | None = 1
    bos_token_id: int | None = 2
    eos_token_id: int | list[int] | None = 3

    def __post_init__(self, **kwargs) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Refuse shapes the attention and the router cannot take."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}.")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads}.")
        if not 0 < self.moe_top_k <= self.num_experts:
            raise ValueError(f"moe_top_k {self.moe_top_k} must be between 1 and num_experts {self.num_experts}.")


__all__ = ["XverseConfig"]
