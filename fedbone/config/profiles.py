"""Named preprocessing profiles: paper scale for GPUs, reduced for CPU runs."""

from __future__ import annotations

from fedbone.data.spec import PreprocessSpec

__all__ = ["PROFILES", "profile_spec"]

#: The paper's geometry (Haberl et al.): 2 mm pixels on a 1024 x 256 canvas.
#: The CPU profile covers the same 2.05 m x 0.51 m field with 8 mm pixels.
PROFILES: dict[str, PreprocessSpec] = {
    "paper": PreprocessSpec(spacing_mm=2.0, canvas_height=1024, canvas_width=256),
    "cpu": PreprocessSpec(spacing_mm=8.0, canvas_height=256, canvas_width=64),
}


def profile_spec(name: str) -> PreprocessSpec:
    """Return the preprocessing spec of a named profile.

    Raises
    ------
    KeyError
        Naming the profiles that exist.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(
            f"no profile {name!r}; choose one of: {', '.join(PROFILES)}"
        ) from None
