"""Training configuration: named recipes, YAML/JSON files, command-line overrides.

Precedence: recipe defaults < the config file < ``--set key=value`` on the command line.
The learning rate, when not given, follows CLIP: 5e-4 at a global batch of 32,768,
scaled linearly to the run's global batch (micro batch x accumulation x world size).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A bad configuration: the message is one line for the user."""


@dataclass
class TrainConfig:
    recipe: str = "debug"
    model: str = "openwit-debug"  # an open_clip model name (ours are registered from trainer/models/)
    data: str = ""  # an `openwit shard` output folder, or a webdataset spec (trainer/streams.py)
    samples_per_epoch: int = 0  # plain webdataset shards: samples in an epoch (open_clip's --train-num-samples)
    balance: str = "auto"  # auto | online | off: draw each epoch with SHARD_INDEX's keep probabilities (auto: if set)
    shuffle_buffer: int = 1000  # plain webdataset shards: samples in each stream's shuffle buffer
    output: str = "runs/debug"
    micro_batch: int = 64  # per rank
    accumulation: int = 1
    epochs: float = 1.0
    steps: int = 0  # 0: from epochs
    lr: float = 0.0  # 0: base_lr scaled by global batch / 32,768
    base_lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.2  # not on gains, biases, any embedding or the temperature (open_clip decays embeddings)
    warmup_steps: int = 2000
    lr_schedule: str = "cosine"  # cosine | const-cooldown
    lr_cooldown: float = 0.2  # const-cooldown: the fraction of steps that decays linearly to 0
    precision: str = "bf16"  # fp32 | bf16
    zero_stage: int = 1
    gradient_clipping: float = 1.0  # set explicitly: DeepSpeed's default changed in 0.19.3
    grad_checkpointing: bool = False
    # train with the token embedding as initialised (random, fixed): the other layers learn to read it. The
    # debug model's embedding is 6.3M of its 8.1M parameters (open_clip's 49,408-token vocabulary)
    lock_token_embedding: bool = False
    channels_last: bool = False  # image batches in NHWC memory order: ~1.25x on a CPU step of the debug ResNet
    # the text tower's per-token layers on each caption's tokens up to its end-of-text token only (the same
    # math: trainer.models.pack_text_tokens); ~40% less text compute on the CPU at the demo's captions
    pack_text: bool = False
    loss: str = "clip"  # clip | siglip
    init_temperature: float = 0.07  # logit scale starts at 1 / 0.07
    max_logit_scale: float = 100.0
    crop_scale: tuple[float, float] = (0.9, 1.0)
    grayscale: float = 0.0  # probability of turning a training image grey (drawn per seed, epoch, sample)
    seed: int = 0
    workers: int = 2
    # MB of decoded images and tokenised captions each batch-making process keeps (0: none): a dataset that
    # fits is read and decoded once, the same batches (SHARD_INDEX data only)
    sample_cache_mb: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    eval_every: int = 0  # evaluate every K steps on rank 0 (0: off)
    eval_suite: str = ""  # a folder of evaluation sets (`openwit eval --suite`), e.g. a synthetic crawl's eval/
    # how evaluation images are brought to the model's size: shortest (resize, centre crop) | longest
    # (letterbox on white, as img2dataset's border resize) | squash | auto (as the training shards were made,
    # from their shard_stats.json; else shortest). The run records the mode it used; export writes it.
    eval_resize_mode: str = "auto"
    deepspeed: dict = field(default_factory=dict)  # DeepSpeed settings merged over the derived ones (engine.ds_config)
    extra: dict = field(default_factory=dict)

    def global_batch(self, world: int) -> int:
        return self.micro_batch * self.accumulation * world

    def learning_rate(self, world: int) -> float:
        return self.lr if self.lr > 0 else self.base_lr * self.global_batch(world) / 32_768

    def lr_at(self, step: int, total: int, world: int) -> float:
        """Linear warmup, then cosine to 0 ('cosine'), or constant then a linear cooldown to
        0 over the last ``lr_cooldown`` of the steps ('const-cooldown'), from the global step."""
        peak = self.learning_rate(world)
        if step < self.warmup_steps:
            return peak * (step + 1) / self.warmup_steps
        if self.lr_schedule == "const-cooldown":
            start = total - max(1, int(round(self.lr_cooldown * total)))
            return peak if step < start else peak * max(0.0, (total - step) / (total - start))
        span = max(1, total - self.warmup_steps)
        return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, (step - self.warmup_steps) / span)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


RECIPES: dict[str, dict] = {
    # tiny towers, CPU, minutes: the demo trains this on the synthetic shards
    # (a small ResNet learns shape several times faster than the small ViT here: docs/evaluation.md)
    # (shape is learned late and only at a high learning rate: constant, then a short cooldown;
    # a 1-layer text tower learns it sooner than 2 layers, and costs less: docs/evaluation.md)
    "debug": dict(model="openwit-debug-rn-t1", micro_batch=128, lr=2e-3, warmup_steps=20, epochs=22, precision="fp32",
                  lr_schedule="const-cooldown", lr_cooldown=0.15, zero_stage=0, weight_decay=0.1,
                  lock_token_embedding=True, channels_last=True, pack_text=True,
                  checkpoint_every=200, log_every=10, workers=2, eval_every=200),
    # CLIP paper hyper-parameters (lr 5e-4 at 32k scaled to the run's batch, wd 0.2, beta2 0.98, eps 1e-6)
    "vit-b-32": dict(model="ViT-B-32", micro_batch=256, warmup_steps=2000, epochs=32, precision="bf16",
                     zero_stage=1, workers=8, checkpoint_every=1000),
    "vit-b-16": dict(model="ViT-B-16", micro_batch=256, warmup_steps=2000, epochs=32, precision="bf16",
                     zero_stage=1, workers=8, checkpoint_every=1000),
    "vit-l-14": dict(model="ViT-L-14", micro_batch=128, warmup_steps=2000, epochs=32, precision="bf16",
                     zero_stage=2, grad_checkpointing=True, workers=8, checkpoint_every=1000),
}


def _coerce(name: str, raw, current):
    if isinstance(current, bool):
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {raw!r}")
    if isinstance(current, tuple):
        items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
        if len(items) != len(current):
            raise ConfigError(f"{name}: expected {len(current)} comma-separated numbers, got {raw!r}")
        return tuple(_coerce(name, x, current[0]) for x in items)
    if isinstance(current, dict):
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                raise ConfigError(f"{name}: expected a JSON mapping, got {raw!r}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{name}: expected a mapping")
        return raw
    try:
        if isinstance(current, int):
            value = float(raw)
            if value != int(value):
                raise ValueError
            return int(value)
        if isinstance(current, float):
            return float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    return str(raw)


def apply(cfg: TrainConfig, values: dict, where: str) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, raw in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{where}: unknown setting '{key}' (known: {', '.join(sorted(known))})")
        setattr(cfg, name, _coerce(name, raw, getattr(cfg, name)))
    return cfg


def load(recipe: str | None = None, config_file: str | None = None, overrides: list[str] | None = None,
         deepspeed_file: str | None = None) -> TrainConfig:
    """Recipe, then file, then ``key=value`` overrides, then a DeepSpeed config file's
    settings merged over the ``deepspeed`` setting; validated."""
    file_values: dict = {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"--config {config_file}: no such file")
        try:
            text = path.read_text()
            file_values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text) or {}
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"--config {config_file}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} "
                              f"({str(e).splitlines()[0]})") from None
        if not isinstance(file_values, dict):
            raise ConfigError(f"--config {config_file}: expected a mapping of settings")
    name = recipe or file_values.get("recipe") or "debug"
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe '{name}' (known: {', '.join(RECIPES)})")
    cfg = apply(TrainConfig(recipe=name), RECIPES[name], f"recipe {name}")
    cfg = apply(cfg, file_values, f"--config {config_file}")
    pairs = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected key=value")
        pairs[key.strip()] = value.strip()
    cfg = apply(cfg, pairs, "--set")
    if deepspeed_file:
        cfg.deepspeed = merged(cfg.deepspeed, load_deepspeed_config(deepspeed_file))
    validate(cfg)
    return cfg


def merged(base: dict, over: dict) -> dict:
    """``over`` merged into ``base``, mappings key by key (a copy)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# DeepSpeed settings openwit derives from its own: a user's DeepSpeed config may not set
# them (the two would disagree), and the message names the setting to use instead.
OWNED_DEEPSPEED = {
    "train_batch_size": "micro_batch and accumulation (the global batch is micro_batch x accumulation x ranks)",
    "train_micro_batch_size_per_gpu": "micro_batch",
    "gradient_accumulation_steps": "accumulation",
    "gradient_clipping": "gradient_clipping",
    "bf16": "precision", "fp16": "precision", "amp": "precision", "torch_autocast": "precision",
    "optimizer": "lr, base_lr, betas, eps and weight_decay (openwit builds AdamW with its decay groups)",
    "scheduler": "warmup_steps, lr_schedule and lr_cooldown (openwit sets the learning rate every step)",
    "zero_optimization.stage": "zero_stage",
}


def load_deepspeed_config(path: str) -> dict:
    """A user's DeepSpeed settings (JSON or YAML), checked against ``OWNED_DEEPSPEED``."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--deepspeed-config {path}: no such file")
    try:
        text = file.read_text(encoding="utf-8")
        values = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"--deepspeed-config {path}: not valid {'JSON' if file.suffix == '.json' else 'YAML'} "
                          f"({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--deepspeed-config {path}: expected a mapping of DeepSpeed settings")
    check_deepspeed(values, f"--deepspeed-config {path}")
    return values


def check_deepspeed(values: dict, where: str) -> None:
    for key, value in values.items():
        owned = OWNED_DEEPSPEED.get(key)
        if owned is None and isinstance(value, dict):
            owned = next((OWNED_DEEPSPEED[f"{key}.{k}"] for k in value if f"{key}.{k}" in OWNED_DEEPSPEED), None)
            key = next((f"{key}.{k}" for k in value if f"{key}.{k}" in OWNED_DEEPSPEED), key)
        if owned is not None:
            raise ConfigError(f"{where}: '{key}' is openwit's to set; use {owned} (--set KEY=VALUE)")


def validate(cfg: TrainConfig) -> None:
    check_deepspeed(cfg.deepspeed, "deepspeed")
    if cfg.precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision: expected fp32 or bf16, got {cfg.precision!r}")
    if cfg.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"zero_stage: expected 0, 1, 2 or 3, got {cfg.zero_stage}")
    if cfg.loss not in ("clip", "siglip"):
        raise ConfigError(f"loss: expected clip or siglip, got {cfg.loss!r}")
    for name in ("micro_batch", "accumulation", "workers", "checkpoint_every", "keep_checkpoints", "log_every"):
        if getattr(cfg, name) < (0 if name == "workers" else 1):
            raise ConfigError(f"{name}: must be positive, got {getattr(cfg, name)}")
    if cfg.sample_cache_mb < 0:
        raise ConfigError(f"sample_cache_mb: must be 0 or more, got {cfg.sample_cache_mb}")
    if cfg.samples_per_epoch < 0 or cfg.shuffle_buffer < 1:
        raise ConfigError("samples_per_epoch must be 0 or more and shuffle_buffer at least 1")
    if cfg.balance not in ("auto", "online", "off"):
        raise ConfigError(f"balance: expected auto, online or off, got {cfg.balance!r}")
    if cfg.eval_resize_mode not in ("auto", "shortest", "longest", "squash"):
        raise ConfigError(f"eval_resize_mode: expected auto, shortest, longest or squash, got {cfg.eval_resize_mode!r}")
    if cfg.lr_schedule not in ("cosine", "const-cooldown"):
        raise ConfigError(f"lr_schedule: expected cosine or const-cooldown, got {cfg.lr_schedule!r}")
    if not 0 < cfg.lr_cooldown <= 1:
        raise ConfigError(f"lr_cooldown: expected a fraction in (0, 1], got {cfg.lr_cooldown}")
    if not 0 <= cfg.grayscale <= 1:
        raise ConfigError(f"grayscale: expected a probability in [0, 1], got {cfg.grayscale}")
    if not 0 < cfg.crop_scale[0] <= cfg.crop_scale[1] <= 1:
        raise ConfigError(f"crop_scale: expected 0 < low <= high <= 1, got {cfg.crop_scale}")
