"""openwit's contrastive image-text trainer (DeepSpeed) and zero-shot evaluation."""
