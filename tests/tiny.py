"""The smallest model the quick-start config can be turned into with --set: ViT-T at 32 px, patch 8
(a 4x4 grid), a one-block predictor, two small target blocks. Depth comes from the timm name, so the
encoder keeps its 12 blocks; relu keeps the CPU step short."""

TINY_MODEL = ["data.image_size=32", "model.encoder_type=vit_tiny_patch8_32", "model.predictor.embed_dim=48",
              "model.predictor.depth=1", "model.predictor.num_heads=3", "masking.num_masks=2",
              "masking.min_keep=2", "masking.mask_scale=[0.1, 0.15]", "model.mlp_activation=relu"]

TINY_RUN = TINY_MODEL + ["data.num_workers=0", "evaluation.knn.enabled=false", "data.val_holdout=1"]
