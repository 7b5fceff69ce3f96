"""Logical axis names, one place for all of them.

Model code names every parameter and activation dimension with these constants (through
``nn.with_logical_partitioning`` and ``nn.with_logical_constraint``) and never sees a mesh. The
training and serving code maps them to mesh axes with a rules table from config; without rules the
annotations are no-ops, so the same model runs on one CPU.
"""

# Parameter axes.
LAYERS = "layers"  # the stacked (scanned) layer dimension
EMBED = "embed"  # decoder width
HEADS = "heads"
KV = "kv"  # per-head width
MLP = "mlp"
VOCAB = "vocab"  # audio-token vocabulary (codebook entries)
CODEBOOKS = "codebooks"
TEXT_EMBED = "text_embed"
TEXT_VOCAB = "text_vocab"
TEXT_HEADS = "text_heads"
TEXT_KV = "text_kv"
TEXT_MLP = "text_mlp"
BUCKETS = "buckets"  # T5 relative-position buckets
ATTRIBUTE_VOCAB = "attribute_vocab"
CHROMA = "chroma"  # a melody model's chroma bins (12)
NORM = "norm"  # layer-norm scales and biases

# Activation axes.
BATCH = "activation_batch"
LENGTH = "activation_length"
ACT_EMBED = "activation_embed"
ACT_HEADS = "activation_heads"
ACT_KV = "activation_kv"
ACT_MLP = "activation_mlp"
ACT_VOCAB = "activation_vocab"
ACT_CODEBOOKS = "activation_codebooks"
COND_LEN = "activation_cond_len"  # text / conditioning tokens
CACHE_LENGTH = "cache_length"

# The default rules: data parallel over ("data", "fsdp"), parameters fully sharded over "fsdp",
# heads / mlp / vocab over "tensor". A mesh axis of size 1 makes its rules free, so one table
# serves data-parallel, FSDP and tensor-parallel layouts; configs may replace it.
DEFAULT_RULES: tuple[tuple[str, tuple[str, ...] | str | None], ...] = (
    (BATCH, ("data", "fsdp")),
    (LENGTH, None),
    (ACT_EMBED, None),
    (ACT_HEADS, "tensor"),
    (ACT_KV, None),
    (ACT_MLP, "tensor"),
    (ACT_VOCAB, "tensor"),
    (ACT_CODEBOOKS, None),
    (COND_LEN, None),
    (CACHE_LENGTH, None),
    (LAYERS, None),
    (EMBED, "fsdp"),
    (HEADS, "tensor"),
    (KV, None),
    (MLP, "tensor"),
    (VOCAB, "tensor"),
    (CODEBOOKS, None),
    (TEXT_EMBED, "fsdp"),
    (TEXT_VOCAB, "tensor"),
    (TEXT_HEADS, "tensor"),
    (TEXT_KV, None),
    (TEXT_MLP, "tensor"),
    (BUCKETS, None),
    (ATTRIBUTE_VOCAB, None),
    (CHROMA, None),
    (NORM, None),
)
