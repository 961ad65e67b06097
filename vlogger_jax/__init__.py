"""vlogger_jax: VLOGGER (multimodal diffusion for embodied avatar synthesis) in JAX/Flax."""

__version__ = "0.1.0"
