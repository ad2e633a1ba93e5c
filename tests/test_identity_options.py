"""Model options beside the checkpoint (a replacement VAE, the runtime fast paths) join its identity
and label when not at their defaults, so they never share cache entries, resume keys or table rows."""

from __future__ import annotations

from eval.identity import checkpoint_identity


def test_default_options_leave_the_identity_as_the_checkpoint_alone() -> None:
    plain = checkpoint_identity({"pretrained": "stabilityai/sdxl-turbo"})
    defaults = checkpoint_identity({"pretrained": "stabilityai/sdxl-turbo", "vae": None, "compile": False,
                                    "offload": "none", "channels_last": False})
    assert plain == defaults and plain.label == "stabilityai/sdxl-turbo@main"


def test_a_replacement_vae_or_compile_is_another_identity_and_label() -> None:
    plain = checkpoint_identity({"pretrained": "stabilityai/sdxl-turbo"})
    fixed = checkpoint_identity({"pretrained": "stabilityai/sdxl-turbo", "vae": "madebyollin/sdxl-vae-fp16-fix"})
    compiled = checkpoint_identity({"pretrained": "stabilityai/sdxl-turbo", "compile": True})
    assert len({str(plain.identity), str(fixed.identity), str(compiled.identity)}) == 3
    assert fixed.label.endswith("+vae=madebyollin/sdxl-vae-fp16-fix") and compiled.label.endswith("+compile=True")
