"""Configure JAX once, before any computation: float64 and the persistent compile cache.

The cache lives in $LW_JAX_CACHE (default ~/.cache/lw/jax) so a second `lw`
process reuses the programs compiled by the first instead of paying the
compile time again. Set LW_JAX_CACHE=off to disable it.

Every module that computes with JAX imports this module before its first
JAX call (rkme.kernels and the other kernel modules at their import;
rkme.spec lazily, in ``spec._jax()``, so that reading specs never imports
JAX).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

_cache = os.environ.get("LW_JAX_CACHE", str(Path.home() / ".cache" / "lw" / "jax"))
if _cache and _cache.lower() != "off":
    try:
        Path(_cache).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", _cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except OSError:
        pass  # a read-only home only costs compile time
