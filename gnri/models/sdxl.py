"""SDXL and SDXL-Turbo adapter (StableDiffusionXLPipeline).

Conditioning adds SDXL's ``added_cond_kwargs``: ``text_embeds`` (the second encoder's pooled
projection) and ``time_ids`` (original size, crop (0, 0), target size = ``image_size``), as
StableDiffusionXLPipeline builds them; the two encoders' hidden states are concatenated by the
pipeline's own ``encode_prompt`` (negative branch zeroed when the checkpoint sets
``force_zeros_for_empty_prompt`` and no negative prompt is given, as in diffusers).

SDXL-Turbo conventions (conf/model/sdxl_turbo.yaml): 512 px, guidance 0, ``guidance_distilled``
true, Euler (ancestral) levels with trailing spacing (conf/schedule/euler4_trailing.yaml).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusionXLPipeline

from gnri.core import Conditioning
from gnri.models.sd import SDAdapter


class SDXLAdapter(SDAdapter):
    """SDXL as a :class:`~gnri.models.base.ModelAdapter` (same options as :class:`SDAdapter`).

    ``image_size`` defaults to the UNet sample size x VAE factor (1024 for SDXL base).
    """

    loader_family = "sdxl"
    pipeline_class: Any = StableDiffusionXLPipeline

    @staticmethod
    def _load_kwargs() -> dict[str, Any]:
        return {"add_watermarker": False}

    def _text_encoders(self) -> list[tuple[str, Any, int]]:
        out = []
        for name in ("tokenizer", "tokenizer_2"):
            tok = getattr(self.pipe, name, None)
            if tok is not None:
                out.append((name.replace("tokenizer", "text_encoder"), tok, int(tok.model_max_length)))
        return out

    def _time_ids(self, batch: int) -> torch.Tensor:
        size = tuple(self._image_size)
        te2 = self.pipe.text_encoder_2
        proj = int(te2.config.projection_dim) if te2 is not None else None
        ids = self.pipe._get_add_time_ids(
            size, (0, 0), size, dtype=self.pipe.unet.dtype, text_encoder_projection_dim=proj
        )
        return ids.to(self.device).repeat(batch, 1)

    def encode_prompts(
        self, prompts: list[str], guidance_scale: float = 1.0, negative_prompts: list[str] | None = None,
        true_cfg_scale: float = 1.0,
    ) -> Conditioning:
        """Both CLIP encoders' hidden states, pooled text embeds and time ids per branch; guidance
        as :meth:`SDAdapter.encode_prompts` (SDXL-Turbo too: > 1 is classifier-free guidance)."""
        self._check_guidance(guidance_scale, true_cfg_scale)
        use_cfg = guidance_scale > 1.0
        pos, neg, pooled, neg_pooled = self.pipe.encode_prompt(
            prompt=list(prompts), device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=use_cfg, negative_prompt=negative_prompts,
        )
        time_ids = self._time_ids(len(prompts))
        positive = {"prompt_embeds": pos, "text_embeds": pooled, "time_ids": time_ids}
        negative = None
        if use_cfg:
            negative = {"prompt_embeds": neg, "text_embeds": neg_pooled, "time_ids": time_ids.clone()}
        return Conditioning(positive, negative, guidance_scale, self.guidance_distilled)
