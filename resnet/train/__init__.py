"""Training: the one engine (``engine``) that fine-tuning (``finetune``: the CLI's and the app's runs), torchrun
(``distributed``) and the labs' race all train with."""
from .engine import EVAL_BATCH, Shard, Totals, Trainer, adamw_cosine, evaluate, precise_bn, state_checksum  # noqa: F401
