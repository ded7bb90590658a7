"""Recipes, files and overrides; the learning-rate rule; one-line errors."""

from __future__ import annotations

import math

import pytest

from trainer.config import RECIPES, ConfigError, TrainConfig, load


def test_recipes_load_with_clip_hyper_parameters():
    for name in RECIPES:
        cfg = load(name)
        assert cfg.recipe == name and cfg.betas == (0.9, 0.98) and cfg.eps == 1e-6
        assert cfg.gradient_clipping == 1.0 and cfg.init_temperature == 0.07
    b32 = load("vit-b-32")
    assert b32.weight_decay == 0.2 and b32.lr == 0.0
    assert b32.learning_rate(world=128) == pytest.approx(5e-4 * 256 * 128 / 32_768)


def test_file_then_command_line(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("recipe: vit-b-16\nmicro_batch: 8\nprecision: fp32\ncrop_scale: [0.8, 1.0]\n")
    cfg = load(None, str(f), ["micro_batch=4", "zero_stage=2", "grad_checkpointing=true"])
    assert (cfg.recipe, cfg.model, cfg.micro_batch, cfg.precision, cfg.zero_stage) == ("vit-b-16", "ViT-B-16", 4, "fp32", 2)
    assert cfg.grad_checkpointing is True and cfg.crop_scale == (0.8, 1.0)
    j = tmp_path / "run.json"
    j.write_text('{"steps": 7}')
    assert load("debug", str(j)).steps == 7


def test_constant_then_linear_cooldown():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, lr_schedule="const-cooldown", lr_cooldown=0.2)
    assert cfg.lr_at(0, 100, 1) == pytest.approx(0.1) and cfg.lr_at(10, 100, 1) == 1.0
    assert cfg.lr_at(79, 100, 1) == 1.0 and cfg.lr_at(80, 100, 1) == pytest.approx(1.0)
    assert cfg.lr_at(90, 100, 1) == pytest.approx(0.5) and cfg.lr_at(100, 100, 1) == 0.0
    with pytest.raises(ConfigError, match="lr_schedule"):
        load("debug", None, ["lr_schedule=step"])


def test_warmup_then_cosine_from_the_global_step():
    cfg = TrainConfig(lr=1.0, warmup_steps=10)
    assert cfg.lr_at(0, 110, 1) == pytest.approx(0.1)
    assert cfg.lr_at(9, 110, 1) == pytest.approx(1.0)
    assert cfg.lr_at(60, 110, 1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cfg.lr_at(110, 110, 1) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("overrides,needle", [
    (["nope=1"], "unknown setting 'nope'"),
    (["micro_batch=abc"], "micro_batch"),
    (["precision=fp8"], "precision"),
    (["zero_stage=5"], "zero_stage"),
    (["micro_batch"], "key=value"),
    (["crop_scale=0.9"], "crop_scale"),
])
def test_bad_settings_are_one_line(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load("debug", None, overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_bad_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(None, str(f))
    with pytest.raises(ConfigError, match="no such file"):
        load(None, str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="unknown recipe"):
        load("vit-z-99")


def test_a_deepspeed_config_is_merged_over_the_derived_one(tmp_path):
    from trainer.engine import ds_config

    f = tmp_path / "offload.json"
    f.write_text('{"zero_optimization": {"offload_optimizer": {"device": "cpu"}, "reduce_bucket_size": 50000000},'
                 ' "communication_data_type": "fp32", "steps_per_print": 5}')
    cfg = load("debug", None, ["zero_stage=2", "micro_batch=32"], str(f))
    ds = ds_config(cfg)
    assert ds["zero_optimization"] == {"stage": 2, "offload_optimizer": {"device": "cpu"},  # not-a-column
                                       "reduce_bucket_size": 50000000}
    assert ds["communication_data_type"] == "fp32" and ds["steps_per_print"] == 5
    assert ds["train_micro_batch_size_per_gpu"] == 32 and ds["gradient_clipping"] == 1.0
    yaml_file = tmp_path / "comm.yaml"
    yaml_file.write_text("zero_optimization:\n  overlap_comm: true\n")
    assert ds_config(load("debug", None, [], str(yaml_file)))["zero_optimization"]["overlap_comm"] is True


@pytest.mark.parametrize("text, needle", [
    ('{"train_micro_batch_size_per_gpu": 8}', "use micro_batch"),
    ('{"bf16": {"enabled": false}}', "use precision"),
    ('{"optimizer": {"type": "Adam"}}', "'optimizer' is openwit's to set"),
    ('{"zero_optimization": {"stage": 3}}', "'zero_optimization.stage' is openwit's to set; use zero_stage"),
    ('{"gradient_clipping": 0}', "use gradient_clipping"),
    ('[1, 2]', "expected a mapping"),
    ('{"a": ', "not valid JSON"),
])
def test_a_deepspeed_config_may_not_set_what_openwit_derives(tmp_path, text, needle):
    f = tmp_path / "ds.json"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load("debug", None, [], str(f))
    assert needle in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="no such file"):
        load("debug", None, [], str(tmp_path / "missing.json"))


def test_balance_is_auto_online_or_off():
    assert load("debug", None, []).balance == "auto" and load("debug", None, ["balance=off"]).balance == "off"
    with pytest.raises(ConfigError, match="balance: expected auto, online or off, got 'last'"):
        load("debug", None, ["balance=last"])


def test_the_sample_cache_is_off_unless_set_and_never_negative():
    assert load("debug", None, []).sample_cache_mb == 0 and load("debug", None, ["sample_cache_mb=512"]).sample_cache_mb == 512
    with pytest.raises(ConfigError, match="sample_cache_mb: must be 0 or more, got -1"):
        load("debug", None, ["sample_cache_mb=-1"])


def test_narrow_batch_norms_run_in_nchw_and_hand_back_channels_last():
    import torch

    from trainer import models

    torch.manual_seed(0)
    plain = models.create("openwit-debug-rn")
    hooked = models.create("openwit-debug-rn")
    hooked.load_state_dict(plain.state_dict())
    assert models.narrow_batch_norms_in_nchw(hooked) == 2  # the stem's two 8-channel ones
    assert models.narrow_batch_norms_in_nchw(torch.nn.Sequential(torch.nn.BatchNorm2d(32))) == 0
    bn = hooked.visual.bn1
    seen = []
    bn.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
    x = torch.randn(4, 8, 6, 6).to(memory_format=torch.channels_last)
    y = bn(x)
    assert seen == [True] and y.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(16, 3, 64, 64).to(memory_format=torch.channels_last)
    tokens = torch.randint(1, 1000, (16, 20))
    out_plain, out_hooked = plain(images, tokens), hooked(images, tokens)
    for a, b in zip(out_plain[:2], out_hooked[:2]):
        assert torch.allclose(a, b, atol=1e-4)  # the same math, sums in another order
    out_plain[0].sum().backward()
    out_hooked[0].sum().backward()
    assert torch.allclose(plain.visual.conv1.weight.grad, hooked.visual.conv1.weight.grad, atol=1e-3, rtol=1e-3)


def test_locking_the_token_embedding_takes_it_out_of_the_optimizer():
    import torch

    from trainer import models

    model = models.create("openwit-debug-rn")
    assert models.lock_token_embedding(model) == 49_408 * 128
    trained = {id(p) for group in models.param_groups(model, 0.1) for p in group["params"]}
    assert id(model.token_embedding.weight) not in trained and id(model.positional_embedding) in trained
    with pytest.raises(ValueError, match="no token embedding"):
        models.lock_token_embedding(torch.nn.Linear(2, 2))
    assert load("debug").lock_token_embedding and load("debug").channels_last
    assert not load("vit-b-32").lock_token_embedding
    with pytest.raises(ConfigError, match="lock_token_embedding: expected true or false"):
        load("debug", None, ["lock_token_embedding=maybe"])


@pytest.mark.parametrize("name", ["openwit-debug-rn-t1", "openwit-debug-rn", "openwit-debug"])
def test_the_packed_text_tower_gives_open_clip_s_features_and_gradients(name):
    import torch

    from trainer import models

    plain = models.create(name, seed=3)
    packed = models.create(name, seed=3)
    assert models.pack_text_tokens(packed)
    context = models.model_config(name)["text_cfg"]["context_length"]
    texts = ["", "a", "a small red circle on a grid background",
             "Buy small cyan heart sticker | Free shipping", "word " * (2 * context),  # cut at the context
             "Ünïcödé ☂ 图像 caption"]
    tokens = models.tokenizer(name)(texts)
    assert int(tokens.argmax(dim=-1).max()) == context - 1 and int(tokens.argmax(dim=-1).min()) == 1
    for batch in (tokens, tokens[1:2]):  # a batch of one too
        a, b = plain.encode_text(batch), packed.encode_text(batch)
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)
    plain.encode_text(tokens, normalize=True).square().sum().backward()
    packed.encode_text(tokens, normalize=True).square().sum().backward()
    for (n, p), q in zip(plain.named_parameters(), packed.parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), n
    images = torch.randn(len(texts), 3, 64, 64)
    assert torch.allclose(plain(images, tokens)[1], packed(images, tokens)[1], atol=1e-6)  # through forward


def test_packing_refuses_a_text_tower_whose_output_is_not_the_causal_end_of_text_token():
    import torch

    from trainer import models

    pooled_last = models.create("openwit-debug-rn")
    pooled_last.text_pool_type = "last"
    assert not models.pack_text_tokens(pooled_last)
    bidirectional = models.create("openwit-debug-rn")
    bidirectional.attn_mask = torch.zeros_like(bidirectional.attn_mask)
    assert not models.pack_text_tokens(bidirectional)
    no_mask = models.create("openwit-debug-rn")
    no_mask.attn_mask = None
    assert not models.pack_text_tokens(no_mask)
    dropout = models.create("openwit-debug-rn")
    dropout.transformer.resblocks[1].attn.dropout = 0.1
    assert not models.pack_text_tokens(dropout)
    assert not models.pack_text_tokens(torch.nn.Linear(2, 2))
    assert "encode_text" not in vars(pooled_last) and "encode_text" not in vars(bidirectional)
    assert load("debug").pack_text and not load("vit-b-32").pack_text


def test_the_attention_pool_computes_only_the_query_it_keeps():
    import torch

    from trainer import models

    plain = models.create("openwit-debug-rn", seed=1)
    changed = models.create("openwit-debug-rn", seed=1)
    assert models.first_query_attention_pool(changed) == 1
    assert models.first_query_attention_pool(models.create("openwit-debug")) == 0  # a ViT has none
    x = torch.randn(8, 512, 2, 2)
    a, b = plain.visual.attnpool(x), changed.visual.attnpool(x)
    assert a.shape == b.shape == (8, 64) and torch.allclose(a, b, atol=1e-5)
    a.square().sum().backward()
    b.square().sum().backward()
    for (n, p), q in zip(plain.visual.attnpool.named_parameters(), changed.visual.attnpool.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), n
